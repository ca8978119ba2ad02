"""``inference`` section: one image through our full model (box + mask + offset keypoints,
deformable res3-res5 and keypoint head, post-processors PRN + activity) vs torchvision's
``keypointrcnn_resnet50_fpn`` vs ``maskrcnn_resnet50_fpn`` followed by
``keypointrcnn_resnet50_fpn``, exactly ``num_people`` detections through the heads."""

from typing import Dict, Tuple

import torch

from ..candidates import (
    ModelCache,
    label,
    onnxruntime_available,
    ours_infer_fn,
    params_m,
    tv_infer_fn,
)
from ..harness import log, ratio, run_interleaved, stats_or_error, sum_stats
from ..inputs import random_image
from ..report import fmt_ms, fmt_ratio, header, table
from ..settings import Settings

NAMES = ["ours_full", "tv_keypointrcnn", "tv_maskrcnn"]
ORT = "ours_full_onnxruntime"
PAIR = "tv_maskrcnn+keypointrcnn"


def _names(s: Settings):
    """The candidates: the ONNX export run by onnxruntime too, on the CPU when it is installed."""
    if s.device == "cpu" and onnxruntime_available():
        return NAMES[:1] + [ORT] + NAMES[1:]
    return list(NAMES)


def _measure(s: Settings,
             cache: ModelCache) -> Tuple[Dict[str, Dict[str, object]], Dict[str, str]]:
    """Per model: time stats, detections of each run, mean box size of the last, parameters;
    plus the maskrcnn + keypointrcnn pair (per-round sums). Also ``{name: error}``."""
    device = torch.device(s.device)
    img = random_image(s.size, s.seed)
    names = _names(s)
    models, errors = {}, {}
    for k in names:
        try:
            models[k] = cache.get(k)
        except Exception as exc:  # noqa: BLE001  (an export that fails is reported, not fatal)
            if k != ORT:
                raise
            errors[k] = f"{type(exc).__name__}: {exc}"
            log(f"inference: {k} FAILED to build: {errors[k]}")
    fns = {k: (tv_infer_fn if k.startswith("tv_") else ours_infer_fn)(m, img, s)
           for k, m in models.items()}
    times, counts, run_errors = run_interleaved(fns, s, "inference", device)
    errors.update(run_errors)
    res: Dict[str, Dict[str, object]] = {}
    for k in names:
        res[k] = stats_or_error(times, errors, k)
        res[k]["num_detections"] = [int(c[0]) for c in counts.get(k, [])]
        res[k]["mean_box_wh"] = list(counts[k][-1][1:]) if counts.get(k) else None
        res[k]["params_m"] = params_m(models[k]) if k in models else 0.0
    if ORT in res:
        res[ORT].update(cache.export_info)
    res[PAIR] = sum_stats([res["tv_maskrcnn"], res["tv_keypointrcnn"]])
    res[PAIR]["num_detections"] = [
        min(a, b) for a, b in zip(res["tv_maskrcnn"]["num_detections"],
                                  res["tv_keypointrcnn"]["num_detections"])
    ]
    res[PAIR]["mean_box_wh"] = None
    res[PAIR]["params_m"] = res["tv_maskrcnn"]["params_m"] + res["tv_keypointrcnn"]["params_m"]
    return res, errors


def _print(s: Settings, env, res, ok, ratios) -> None:
    """The inference table, the ratio line and the failures."""
    ours = res["ours_full"]
    rows = []
    for k in [n for n in res if n != PAIR] + [PAIR]:
        st = res[k]
        counts_txt = ",".join(str(c) for c in sorted(set(st["num_detections"]))) or "-"
        wh = st["mean_box_wh"]
        rows.append([label(k, s), counts_txt + ("" if ok[k] or "error" in st else " (!)"),
                     f"{wh[0]:.0f} x {wh[1]:.0f}" if wh else "", f"{st['params_m']:.1f}",
                     *fmt_ms(st), fmt_ratio(ratio(ours, st))])
    h, w = s.size
    print(header("inference", env, f"one {h}x{w} image, {s.num_people} people forced through "
                                   f"the heads (boxes: {s.boxes}), median of {s.repeats} runs "
                                   f"after {s.warmup} warm-up, random weights"))
    print(table(rows, ["model", "boxes returned", "mean box w x h", "params (M)", "median ms",
                       "IQR ms", "min-max ms", "ours / model"]))
    print(f"ours / keypointrcnn = {fmt_ratio(ratios['ours_over_keypointrcnn'])} (median), "
          f"{fmt_ratio(ratios['ours_over_keypointrcnn_min'])} (min);  ours / (maskrcnn + "
          f"keypointrcnn) = {fmt_ratio(ratios['ours_over_maskrcnn_plus_keypointrcnn'])} "
          f"(median), {fmt_ratio(ratios['ours_over_maskrcnn_plus_keypointrcnn_min'])} (min)")
    if ORT in res and "error" not in res[ORT]:
        e = res[ORT]
        print(f"onnxruntime / keypointrcnn = {fmt_ratio(ratios['onnxruntime_over_keypointrcnn'])}"
              f" (median);  onnxruntime / ours in PyTorch = "
              f"{fmt_ratio(ratios['onnxruntime_over_pytorch'])} (median);  the ONNX export: "
              f"{e.get('graph_mb', 0):.0f} MB graph, traced and written in "
              f"{e.get('export_s', 0):.1f} s")
    for k, v in res.items():
        if "error" in v:
            print(f"FAILED {k}: {v['error']}")
    print(flush=True)


def section_inference(s: Settings, env, cache: ModelCache) -> Dict[str, object]:
    """Time the inference of each model, check the detection counts, print the table."""
    res, errors = _measure(s, cache)
    ok = {k: "error" not in v and all(c == s.num_people for c in v["num_detections"])
          for k, v in res.items()}
    for k, good in ok.items():
        if not good and "error" not in res[k]:
            log(f"WARNING: {k} returned {res[k]['num_detections']} detections, "
                f"not {s.num_people} every run")
    ours = res["ours_full"]
    ratios = {
        "ours_over_keypointrcnn": ratio(ours, res["tv_keypointrcnn"]),
        "ours_over_keypointrcnn_min": ratio(ours, res["tv_keypointrcnn"], "min_ms"),
        "ours_over_maskrcnn_plus_keypointrcnn": ratio(ours, res[PAIR]),
        "ours_over_maskrcnn_plus_keypointrcnn_min": ratio(ours, res[PAIR], "min_ms"),
    }
    if ORT in res:
        ratios["onnxruntime_over_keypointrcnn"] = ratio(res[ORT], res["tv_keypointrcnn"])
        ratios["onnxruntime_over_pytorch"] = ratio(res[ORT], ours)
    _print(s, env, res, ok, ratios)
    return {"size": list(s.size), "num_people": s.num_people, "boxes": s.boxes, "models": res,
            "detections_ok": ok, "ratios": ratios, "errors": errors}
