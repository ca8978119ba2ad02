"""``amp`` section: our regular model's training iteration in float32 vs under the autocast that
``SOLVER.AMP.ENABLED`` uses on the device (float16 on CUDA, bfloat16 on CPUs with native
bfloat16; skipped on other CPUs)."""

from dataclasses import replace
from typing import Dict

import numpy as np
import torch

from ..candidates import build_ours
from ..harness import amp_dtype, log, ratio, run_interleaved, stats_or_error
from ..inputs import make_train_batch
from ..report import fmt_ms, fmt_ratio, header, table
from ..settings import Settings
from .train import train_step_fn


def section_amp(s: Settings, env) -> Dict[str, object]:
    """Our regular model's training iteration in float32 vs under SOLVER.AMP's autocast."""
    dtype = amp_dtype(torch.device(s.device))
    if dtype is None:
        reason = "this CPU has no native bfloat16 (AVX512-BF16 / AMX); SOLVER.AMP is ignored here"
        print(header("amp", env, f"skipped: {reason}") + "\n", flush=True)
        return {"skipped": reason}
    name = str(dtype).replace("torch.", "")
    ours_inputs, _, _ = make_train_batch(s)
    log("amp: building ours_regular")
    model = build_ours(s, "regular", s.size, postprocessors=False)
    model.train()
    fns = {
        "float32": train_step_fn(model, lambda: model(ours_inputs), replace(s, amp=False)),
        name: train_step_fn(model, lambda: model(ours_inputs), replace(s, amp=True)),
    }
    times, losses, errors = run_interleaved(fns, s, "amp", torch.device(s.device))
    res = {}
    for k in fns:
        res[k] = stats_or_error(times, errors, k)
        res[k]["losses"] = [float(v) for v in losses[k]]
        res[k]["finite"] = bool(np.all(np.isfinite(res[k]["losses"])))
    speedup = ratio(res["float32"], res[name])
    h, w = s.size
    print(header("amp", env, f"ours_regular, one training iteration, batch of {s.train_images} "
                             f"{h}x{w} images, median of {s.repeats} runs after {s.warmup} "
                             f"warm-up"))
    rows = [[k, *fmt_ms(res[k]), fmt_ratio(ratio(res["float32"], res[k]))] for k in fns]
    print(table(rows, ["precision", "median ms", "IQR ms", "min-max ms", "float32 / this"]))
    print(f"SOLVER.AMP.ENABLED speed-up: {fmt_ratio(speedup)} [medians]\n", flush=True)
    return {"dtype": name, "models": res, "speedup": speedup, "errors": errors}
