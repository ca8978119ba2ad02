"""``tracking`` section: what following people over time costs next to the model. One frame
through our full model (as in ``inference``) against one ``PoseTracker.update`` (matching,
smoothing, windowed activity) with the same number of people, walking a few pixels per frame;
the tracker's share of a frame must stay negligible (<= 2 %)."""

from typing import Callable, Dict

import numpy as np
import torch

from ..candidates import ModelCache, label, ours_infer_fn
from ..harness import ratio, run_interleaved, stats_or_error
from ..inputs import make_people, random_image
from ..report import fmt_ms, fmt_ratio, header, table
from ..settings import Settings


def tracker_step_fn(s: Settings, fps: float = 25.0) -> Callable[[], int]:
    """One tracker update per call on ``s.num_people`` people moving 3 px per frame to the right
    (four activity classes, noisy keypoints); returns the number of confirmed tracks."""
    # imported here: scipy would otherwise load in every memory worker and raise its baseline
    from ...tracking import PoseTracker

    people = make_people(s.size, s.num_people, s.seed)
    boxes = people["boxes"].numpy().astype(np.float64)
    keypoints = people["keypoints"].numpy().astype(np.float64)
    rng = np.random.default_rng(s.seed)
    tracker = PoseTracker(fps=fps)
    state = {"frame": 0}

    def fn() -> int:
        shift = 3.0 * state["frame"]
        state["frame"] += 1
        b = boxes.copy()
        b[:, [0, 2]] += shift
        k = keypoints.copy()
        k[..., 0] += shift
        k[..., :2] += rng.normal(0.0, 1.0, size=k[..., :2].shape)
        scores = np.full(len(b), 0.9)
        probs = rng.dirichlet(np.ones(4), size=len(b))
        tracker.update(b, scores, k, probs)
        return len(tracker.tracks)

    return fn


def section_tracking(s: Settings, env, cache: ModelCache) -> Dict[str, object]:
    """Time a frame of the model and a tracker update, print the table and the share."""
    device = torch.device(s.device)
    img = random_image(s.size, s.seed)
    fns = {"ours_full": ours_infer_fn(cache.get("ours_full"), img, s),
           "tracker": tracker_step_fn(s)}
    times, _, errors = run_interleaved(fns, s, "tracking", device)
    res = {k: stats_or_error(times, errors, k) for k in fns}
    share = ratio(res["tracker"], res["ours_full"])
    h, w = s.size
    print(header("tracking", env, f"one {h}x{w} frame of {s.num_people} people: our full model vs "
                                  f"PoseTracker.update, median of {s.repeats} runs after "
                                  f"{s.warmup} warm-up"))
    rows = [[label("ours_full", s), *fmt_ms(res["ours_full"])],
            ["PoseTracker.update (IoU + OKS, One-Euro, window)", *fmt_ms(res["tracker"])]]
    print(table(rows, ["step", "median ms", "IQR ms", "min-max ms"]))
    pct = f"{100 * share:.2f} %" if share == share else "n/a"
    print(f"tracker / model = {fmt_ratio(share)} ({pct} of a frame's inference)\n", flush=True)
    return {"size": list(s.size), "num_people": s.num_people, "models": res,
            "tracker_over_model": share, "errors": errors}
