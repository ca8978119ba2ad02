"""``memory`` section: peak resident memory (CUDA: peak allocated memory) of one inference, one
fresh process per model."""

import multiprocessing as mp
import time
import traceback
from typing import Dict

import torch

from ..candidates import (
    build_ours,
    build_tv,
    export_ours_onnx,
    label,
    n_params,
    onnxruntime_available,
    ours_infer_fn,
    tv_infer_fn,
)
from ..harness import log, peak_rss_mb, ratio, rss_mb, setup_threads, synchronize
from ..inputs import random_image
from ..report import fmt_ratio, header, table
from ..settings import Settings

NAMES = ["ours_full", "tv_keypointrcnn", "tv_maskrcnn+keypointrcnn"]
ORT = "ours_full_onnxruntime"


def _export(s: Settings, directory: str) -> float:
    """Export ``ours_full`` at ``s.memory_size`` into ``directory`` (in this process, so the
    onnxruntime worker only loads what a deployment loads); returns its parameters (M)."""
    model = build_ours(s, "full", s.memory_size)
    export_ours_onnx(s, model, s.memory_size, directory)
    return n_params(model) / 1e6


def _build(s: Settings, name: str, img: torch.Tensor, export_dir: str = ""):
    """The models of candidate ``name`` at ``s.memory_size`` and one inference callable each."""
    if name == ORT:
        import os

        from multitask import get_cfg
        from multitask.export import ExportedModel

        cfg = get_cfg()
        cfg.merge_from_file(os.path.join(export_dir, "config.yaml"))
        models = [ExportedModel(cfg, num_threads=s.threads)]
        fns = [ours_infer_fn(models[0], img, s)]
    elif name == "ours_full":
        models = [build_ours(s, "full", s.memory_size)]
        fns = [ours_infer_fn(models[0], img, s)]
    elif name == "tv_keypointrcnn":
        models = [build_tv(s, "keypointrcnn", s.memory_size)]
        fns = [tv_infer_fn(models[0], img, s)]
    elif name == "tv_maskrcnn+keypointrcnn":
        models = [build_tv(s, "maskrcnn", s.memory_size),
                  build_tv(s, "keypointrcnn", s.memory_size)]
        fns = [tv_infer_fn(m, img, s) for m in models]
    else:
        raise KeyError(name)
    return models, fns


def _measure_in_this_process(s: Settings, name: str, export_dir: str = "") -> Dict[str, object]:
    """Build ``name``, run inference twice, return memory before / after building and the peak."""
    setup_threads(s.threads)
    device = torch.device(s.device)
    img = random_image(s.memory_size, s.seed)
    if device.type == "cuda":
        torch.cuda.init()
    baseline = rss_mb()
    models, fns = _build(s, name, img, export_dir)
    after_build = rss_mb()
    cuda = device.type == "cuda"
    cuda_weights = torch.cuda.memory_allocated(device) / 2**20 if cuda else None
    counts = []
    for _ in range(2):
        for fn in fns:
            counts.append(fn()[0])
        synchronize(device)
    peak, source = peak_rss_mb()
    out = {
        "peak_rss_mb": peak,
        "peak_rss_source": source,
        "baseline_rss_mb": baseline,
        "after_build_rss_mb": after_build,
        "model_rss_mb": after_build - baseline,
        "peak_minus_baseline_mb": peak - baseline,
        "params_m": sum(n_params(m) for m in models) / 1e6,
        "num_detections": counts,
    }
    if device.type == "cuda":
        out["cuda_weights_mb"] = cuda_weights
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    return out


def memory_worker(conn, s: Settings, name: str, export_dir: str = "") -> None:
    """Runs in a fresh process: build ``name``, run inference twice, report peak memory."""
    try:
        conn.send(("ok", _measure_in_this_process(s, name, export_dir)))
    except BaseException:  # report everything, the parent re-raises
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _mp_context():
    """Fresh processes without paying the torch import each time: a fork server that has
    imported torch/torchvision/multitask (and nothing else) forks one child per model."""
    methods = mp.get_all_start_methods()
    if "forkserver" in methods:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "torchvision", "multitask", "tabulate", "numpy"])
        return ctx
    return mp.get_context("spawn")


def _run_worker(ctx, s: Settings, name: str, export_dir: str = "") -> Dict[str, object]:
    """:func:`memory_worker`'s result for ``name``, or ``{"error": last line}``."""
    log(f"memory: {name} in a fresh process ({ctx.get_start_method()})")
    t0 = time.perf_counter()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=memory_worker, args=(child, s, name, export_dir))
    proc.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        status, payload = "error", "worker died without a result"
    proc.join()
    if status != "ok":
        log(f"memory: worker for {name} FAILED (exit code {proc.exitcode}):\n{payload}")
        lines = [x for x in str(payload).strip().splitlines() if x.strip()]
        return {"error": lines[-1][:300] if lines else "failed"}
    log(f"memory: {name} peak {payload['peak_rss_mb']:.0f} MB "
        f"({time.perf_counter() - t0:.1f} s)")
    return payload


def _print(s: Settings, env, res: Dict[str, Dict[str, object]]) -> None:
    """The memory table and the failures."""
    cuda = s.device == "cuda"
    rows = []
    ours = res["ours_full"]
    for k in res:
        r = res[k]
        if "error" in r:
            rows.append([label(k, s), "FAILED"] + [""] * (5 + 2 * cuda))
            continue
        rel = ratio(r, ours, "peak_minus_baseline_mb")
        row = [label(k, s), f"{r['params_m']:.1f}", f"{r['peak_rss_mb']:.0f}",
               f"{r['baseline_rss_mb']:.0f}", f"{r['model_rss_mb']:.0f}",
               f"{r['peak_minus_baseline_mb']:.0f}", fmt_ratio(rel)]
        if cuda:
            row += [f"{r['cuda_max_allocated_mb']:.0f}", f"{r['cuda_weights_mb']:.0f}"]
        rows.append(row)
    headers = ["model", "params (M)", "peak RSS MB", "RSS after imports MB", "weights MB (RSS)",
               "peak - after imports MB", "relative to ours"]
    if cuda:
        headers += ["CUDA max allocated MB", "CUDA weights MB"]
    h, w = s.memory_size
    print(header("memory", env, f"one {h}x{w} image, {s.num_people} people, 2 inference runs "
                                f"in a fresh process per model (peak = "
                                f"{ours.get('peak_rss_source', 'n/a')})"))
    print(table(rows, headers))
    for k, v in res.items():
        if "error" in v:
            print(f"FAILED {k}: {v['error']}")
    print(flush=True)


def section_memory(s: Settings, env) -> Dict[str, object]:
    """Measure each candidate in a fresh process, print the table."""
    ctx = _mp_context()
    res = {name: _run_worker(ctx, s, name) for name in NAMES[:1]}
    if s.device == "cpu" and onnxruntime_available():
        import tempfile

        with tempfile.TemporaryDirectory(prefix="multitask_bench_memory_") as directory:
            try:
                params_m = _export(s, directory)
                res[ORT] = _run_worker(ctx, s, ORT, directory)
                if "error" not in res[ORT]:
                    res[ORT]["params_m"] = params_m  # the graph's network, not only the PRN's
            except Exception as exc:  # noqa: BLE001  (reported in the table and the JSON)
                res[ORT] = {"error": f"{type(exc).__name__}: {exc}"}
    res.update({name: _run_worker(ctx, s, name) for name in NAMES[1:]})
    _print(s, env, res)
    errors = {k: v["error"] for k, v in res.items() if "error" in v}
    return {"size": list(s.memory_size), "num_people": s.num_people, "models": res,
            "errors": errors}
