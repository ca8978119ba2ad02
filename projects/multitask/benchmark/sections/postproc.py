"""``postproc`` section: the post-processors' (PRN, activity classifier) share of the full
model's inference time, measured two ways: timed calls (forward hooks) and the difference
between the model with and without them."""

import time
from typing import Dict, List

import torch
from torch import nn

from multitask.modeling.postprocessing.prn_codec import SOURCE_BOX_SCORE_THRESH

from ..candidates import ModelCache, ours_infer_fn
from ..harness import run_interleaved, sum_stats, summarize, synchronize
from ..inputs import random_image
from ..report import fmt_ms, header, table
from ..settings import Settings


class _CallTimer:
    """Forward hooks timing each post-processor call, and keeping the detection scores the first
    one (the PRN) sees."""

    def __init__(self, postprocessors: nn.ModuleDict, device: torch.device):
        self.call_times: Dict[str, List[float]] = {name: [] for name in postprocessors}
        self.scores: List[torch.Tensor] = []
        self._starts: Dict[str, float] = {}
        self._handles = []
        first = next(iter(postprocessors.keys()))
        for name, module in postprocessors.items():
            def pre(_m, inp, name=name):
                synchronize(device)
                if name == first:  # the scores the PRN sees (its sources depend on them)
                    self.scores[:] = [inp[1][0].scores.detach().float().cpu()]
                self._starts[name] = time.perf_counter()

            def post(_m, _inp, _out, name=name):
                synchronize(device)
                self.call_times[name].append((time.perf_counter() - self._starts[name]) * 1e3)

            self._handles += [module.register_forward_pre_hook(pre),
                              module.register_forward_hook(post)]

    def remove(self) -> None:
        for hnd in self._handles:
            hnd.remove()


def _measure(s: Settings, cache: ModelCache):
    """Times with and without the post-processors, the detection counts, each post-processor's
    timed calls, and the first post-processor's input scores."""
    device = torch.device(s.device)
    model = cache.get("ours_full")
    img = random_image(s.size, s.seed)
    postprocessors = model.postprocessors
    if len(postprocessors) == 0:
        raise RuntimeError("the full model has no post-processors (MODEL.POSTPROCESSORS)")
    timer = _CallTimer(postprocessors, device)
    infer = ours_infer_fn(model, img, s)

    def without_pp() -> int:
        model.postprocessors = nn.ModuleDict()
        try:
            return infer()
        finally:
            model.postprocessors = postprocessors

    try:
        times, counts, errors = run_interleaved({"with": infer, "without": without_pp}, s,
                                                "postproc", device)
    finally:
        timer.remove()
    if errors:
        raise RuntimeError("; ".join(f"{k}: {v}" for k, v in errors.items()))
    # the hooks also fired during warm-up: keep the timed calls only
    call_times = {name: ts[-s.repeats:] for name, ts in timer.call_times.items()}
    return times, counts, call_times, timer.scores


def _print(s: Settings, env, res) -> None:
    """The post-processor table and the share line."""
    with_st, without_st = res["with_postprocessors"], res["without_postprocessors"]
    rows = [
        ["full model with post-processors", *fmt_ms(with_st), "100.0"],
        ["full model without post-processors", *fmt_ms(without_st),
         f"{100.0 * without_st['median_ms'] / with_st['median_ms']:.1f}"],
        ["difference (with - without medians)",
         f"{with_st['median_ms'] - without_st['median_ms']:.1f}", "", "",
         f"{res['share_by_difference_pct']:.1f}"],
    ]
    for name, st in res["postprocessor_calls"].items():
        rows.append([f"{name} call", *fmt_ms(st), f"{st['share_pct']:.1f}"])
    rows.append(["all post-processor calls", *fmt_ms(res["postprocessor_calls_total"]),
                 f"{res['share_by_call_pct']:.1f}"])
    h, w = s.size
    print(header("postproc", env, f"one {h}x{w} image, {s.num_people} people "
                                  f"({res['prn_source_boxes']} with box score >= "
                                  f"{res['prn_source_box_score_thresh']:g}, the PRN's sources), "
                                  f"median of {s.repeats} runs after {s.warmup} warm-up"))
    print(table(rows, ["what", "median ms", "IQR ms", "min-max ms", "% of full model time"]))
    print(f"post-processors' share of inference: {res['share_by_call_pct']:.1f}% (timed calls), "
          f"{res['share_by_difference_pct']:.1f}% (with - without)\n", flush=True)


def section_postproc(s: Settings, env, cache: ModelCache) -> Dict[str, object]:
    """Time the full model with and without its post-processors, and each post-processor call."""
    times, counts, call_times, scores = _measure(s, cache)
    with_st, without_st = summarize(times["with"]), summarize(times["without"])
    calls = {name: summarize(ts) for name, ts in call_times.items()}
    total_calls = sum_stats(list(calls.values()))
    source_thresh = float(SOURCE_BOX_SCORE_THRESH)
    res = {
        "num_people": s.num_people,
        "size": list(s.size),
        "num_detections": [int(c[0]) for c in counts["with"]],
        "with_postprocessors": with_st,
        "without_postprocessors": without_st,
        "postprocessor_calls": calls,
        "postprocessor_calls_total": total_calls,
        "share_by_difference_pct": 100.0 * (with_st["median_ms"] - without_st["median_ms"])
        / with_st["median_ms"],
        "share_by_call_pct": 100.0 * total_calls["median_ms"] / with_st["median_ms"],
        "prn_source_boxes": int((scores[0] >= source_thresh).sum()) if scores else 0,
        "prn_source_box_score_thresh": source_thresh,
    }
    for name, st in calls.items():
        st["share_pct"] = 100.0 * st["median_ms"] / with_st["median_ms"]
    _print(s, env, res)
    return res
