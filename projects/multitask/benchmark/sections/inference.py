"""``inference`` section: one image through our full model (box + mask + offset keypoints,
deformable res3-res5 and keypoint head, post-processors PRN + activity) vs torchvision's
``keypointrcnn_resnet50_fpn`` vs ``maskrcnn_resnet50_fpn`` followed by
``keypointrcnn_resnet50_fpn``, exactly ``num_people`` detections through the heads."""

from typing import Dict, Tuple

import torch

from ..candidates import ModelCache, label, n_params, ours_infer_fn, tv_infer_fn
from ..harness import log, ratio, run_interleaved, stats_or_error, sum_stats
from ..inputs import random_image
from ..report import fmt_ms, fmt_ratio, header, table
from ..settings import Settings

NAMES = ["ours_full", "tv_keypointrcnn", "tv_maskrcnn"]
PAIR = "tv_maskrcnn+keypointrcnn"


def _measure(s: Settings,
             cache: ModelCache) -> Tuple[Dict[str, Dict[str, object]], Dict[str, str]]:
    """Per model: time stats, detections of each run, mean box size of the last, parameters;
    plus the maskrcnn + keypointrcnn pair (per-round sums). Also ``{name: error}``."""
    device = torch.device(s.device)
    img = random_image(s.size, s.seed)
    models = {k: cache.get(k) for k in NAMES}
    fns = {
        "ours_full": ours_infer_fn(models["ours_full"], img, s),
        "tv_keypointrcnn": tv_infer_fn(models["tv_keypointrcnn"], img, s),
        "tv_maskrcnn": tv_infer_fn(models["tv_maskrcnn"], img, s),
    }
    times, counts, errors = run_interleaved(fns, s, "inference", device)
    res: Dict[str, Dict[str, object]] = {}
    for k in NAMES:
        res[k] = stats_or_error(times, errors, k)
        res[k]["num_detections"] = [int(c[0]) for c in counts[k]]
        res[k]["mean_box_wh"] = list(counts[k][-1][1:]) if counts[k] else None
        res[k]["params_m"] = n_params(models[k]) / 1e6
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
    for k in NAMES + [PAIR]:
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
    _print(s, env, res, ok, ratios)
    return {"size": list(s.size), "num_people": s.num_people, "boxes": s.boxes, "models": res,
            "detections_ok": ok, "ratios": ratios, "errors": errors}
