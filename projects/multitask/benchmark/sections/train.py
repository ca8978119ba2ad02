"""``train`` section: one training iteration (forward + backward + SGD step) on the same batch
of images with generated people (boxes, masks, keypoints): ours regular and full vs
torchvision's keypointrcnn and maskrcnn."""

from typing import Callable, Dict

import numpy as np
import torch
from torch import nn

from ..candidates import build_ours, build_tv, label
from ..harness import amp_context, amp_dtype, log, ratio, run_interleaved, stats_or_error, sum_stats
from ..inputs import make_train_batch
from ..report import fmt_ms, fmt_ratio, header, table
from ..settings import Settings

PAIR = "tv_maskrcnn+keypointrcnn"


def train_step_fn(model: nn.Module, loss_fn: Callable[[], Dict[str, torch.Tensor]],
                  s: Settings) -> Callable[[], float]:
    """One SGD iteration of ``model`` on ``loss_fn``'s losses (under ``s.amp``'s autocast, with a
    gradient scaler for float16); returns the loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    # a tiny lr: random weights must not diverge over the repeats (the step costs the same)
    opt = torch.optim.SGD(params, lr=1e-5, momentum=0.9, weight_decay=1e-4)
    use_scaler = s.amp and amp_dtype(torch.device(s.device)) == torch.float16
    scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        with amp_context(s):
            losses = loss_fn()
        loss = sum(losses.values())
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        return float(loss.detach())

    return step


def _measure(s: Settings):
    """Time stats, losses and trainable parameters per model (and the pair), and errors."""
    device = torch.device(s.device)
    ours_inputs, tv_images, tv_targets = make_train_batch(s)
    log("train: building ours_regular, ours_full_train, tv_keypointrcnn, tv_maskrcnn")
    models = {
        "ours_regular": build_ours(s, "regular", s.size, postprocessors=False),
        "ours_full_train": build_ours(s, "full", s.size, postprocessors=False),
        "tv_keypointrcnn": build_tv(s, "keypointrcnn", s.size),
        "tv_maskrcnn": build_tv(s, "maskrcnn", s.size),
    }
    fns = {}
    for name, model in models.items():
        model.train()
        if name.startswith("ours"):
            fns[name] = train_step_fn(model, lambda m=model: m(ours_inputs), s)
        else:
            fns[name] = train_step_fn(model, lambda m=model: m(tv_images, tv_targets), s)
    times, losses, errors = run_interleaved(fns, s, "train", device)
    res: Dict[str, Dict[str, object]] = {}
    for k, model in models.items():
        res[k] = stats_or_error(times, errors, k)
        res[k]["losses"] = [float(v) for v in losses[k]]
        res[k]["finite"] = bool(np.all(np.isfinite(res[k]["losses"])))
        res[k]["trainable_params_m"] = sum(
            p.numel() for p in model.parameters() if p.requires_grad) / 1e6
    res[PAIR] = sum_stats([res["tv_maskrcnn"], res["tv_keypointrcnn"]])
    res[PAIR]["trainable_params_m"] = (res["tv_maskrcnn"]["trainable_params_m"]
                                       + res["tv_keypointrcnn"]["trainable_params_m"])
    return res, errors


def _print(s: Settings, env, res, ratios) -> None:
    """The training table, the ratio line, the failures and non-finite losses."""
    rows = []
    for k in ["ours_regular", "ours_full_train", "tv_keypointrcnn", "tv_maskrcnn", PAIR]:
        st = res[k]
        rows.append([label(k, s), f"{st['trainable_params_m']:.1f}", *fmt_ms(st),
                     fmt_ratio(ratio(res["ours_regular"], st)),
                     fmt_ratio(ratio(res["ours_full_train"], st))])
    h, w = s.size
    print(header("train", env, f"one iteration (forward + backward + SGD step), batch of "
                               f"{s.train_images} {h}x{w} images with {s.train_people} people "
                               f"each, median of {s.repeats} runs after {s.warmup} warm-up"))
    print(table(rows, ["model", "trainable params (M)", "median ms", "IQR ms", "min-max ms",
                       "ours regular / model", "ours full / model"]))
    print("ours / keypointrcnn = {} (regular), {} (full);  ours / (maskrcnn + keypointrcnn) = "
          "{} (regular), {} (full)  [medians]".format(
              *(fmt_ratio(ratios[k]) for k in (
                  "ours_regular_over_keypointrcnn", "ours_full_train_over_keypointrcnn",
                  "ours_regular_over_maskrcnn_plus_keypointrcnn",
                  "ours_full_train_over_maskrcnn_plus_keypointrcnn"))))
    for k, v in res.items():
        if "error" in v:
            print(f"FAILED {k}: {v['error']}")
        elif "finite" in v and not v["finite"]:
            log(f"WARNING: {k} had a non-finite loss: {v['losses']}")
    print(flush=True)


def section_train(s: Settings, env) -> Dict[str, object]:
    """Time one training iteration of each model, print the table."""
    res, errors = _measure(s)
    ratios = {}
    for ours in ("ours_regular", "ours_full_train"):
        for ref, ref_name in (("tv_keypointrcnn", "keypointrcnn"),
                              (PAIR, "maskrcnn_plus_keypointrcnn")):
            ratios[f"{ours}_over_{ref_name}"] = ratio(res[ours], res[ref])
            ratios[f"{ours}_over_{ref_name}_min"] = ratio(res[ours], res[ref], "min_ms")
    _print(s, env, res, ratios)
    return {"size": list(s.size), "images": s.train_images, "people_per_image": s.train_people,
            "models": res, "ratios": ratios, "errors": errors}
