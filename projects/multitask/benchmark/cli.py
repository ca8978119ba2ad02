"""Speed and memory benchmark of the multi-task R-CNN against torchvision's R-CNNs.

Sections (``--sections``, default all):

* ``inference``: one image through our full model (box + mask + offset keypoints, deformable
  res3-res5 and keypoint head, post-processors PRN + activity) vs torchvision's
  ``keypointrcnn_resnet50_fpn`` vs torchvision's ``maskrcnn_resnet50_fpn`` followed by
  ``keypointrcnn_resnet50_fpn``. Every model runs its whole pipeline (RPN, box head, NMS) with the
  box score threshold at 0, box NMS off (IoU threshold 1.0) and ``N`` detections per image, so
  exactly ``--num-people`` boxes go through the mask/keypoint heads; the tool checks the count.
* ``train``: one training iteration (forward + backward + SGD step) on the same batch of images
  with generated people (boxes, masks, keypoints): ours regular and full vs torchvision.
* ``postproc``: the post-processors' share of the full model's inference time.
* ``memory``: peak resident memory (CUDA: peak allocated memory) of one inference, one fresh
  process per model.
* ``ops``: deformable conv (ours, torchvision) vs dense conv2d, via
  :func:`multitask.benchmark.deform_conv.measure_deform_conv`.
* ``amp``: our regular model's training iteration in float32 vs under the autocast that
  ``SOLVER.AMP.ENABLED`` uses on the device (float16 on CUDA, bfloat16 on CPUs with native
  bfloat16; skipped on other CPUs).

Weights are random (no downloads); speed does not depend on them once the number of people is
fixed. Candidates run interleaved (one run of each per repeat), so load changes on a shared
machine hit all of them. Tables go to stdout, progress to stderr, every raw number to
``--output`` (JSON).

Examples::

    python tools/benchmark.py                                   # everything, CPU, 2 threads
    python tools/benchmark.py --sections inference,memory --repeats 10
    python tools/benchmark.py --device cuda --amp --threads 8
    python tools/benchmark.py --tiny                            # seconds-long smoke test
"""

import argparse
import datetime
import json
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .candidates import ModelCache
from .harness import amp_dtype, log, setup_threads, short_error
from .report import environment, header, load_average
from .sections.amp import section_amp
from .sections.inference import section_inference
from .sections.memory import section_memory
from .sections.ops import section_ops
from .sections.postproc import section_postproc
from .sections.tracking import section_tracking
from .sections.train import section_train
from .settings import SECTIONS, TINY_SIZE, Settings


def parse_size(text: str) -> Tuple[int, int]:
    """``HxW`` (or ``H*W``) as (H, W), both at least 32."""
    try:
        h, w = (int(v) for v in text.lower().replace("*", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 800x1216, got '{text}'") from None
    if h < 32 or w < 32:
        raise argparse.ArgumentTypeError(f"size {text} is too small (>= 32x32)")
    return h, w


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``tools/benchmark.py``."""
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Sections: " + ", ".join(SECTIONS),
    )
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help="comma-separated subset of %(default)s")
    p.add_argument("--tiny", action="store_true",
                   help="seconds-long smoke test: 128x160 input, ResNet-18, small heads, "
                        "2 repeats, no warm-up (numbers are meaningless)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--amp", action="store_true",
                   help="run every model under SOLVER.AMP's autocast: float16 on CUDA, bfloat16 "
                        "on CPUs with native bfloat16")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default 2, for CPU comparability; --tiny: 1, "
                        "which is much faster than 2 on a busy 2-core machine)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed runs per candidate (default 5; --tiny: 2)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs per candidate first (default 1; --tiny: 0). The ops "
                        "section always does measure_deform_conv's single warm-up run")
    p.add_argument("--size", type=parse_size, default=None,
                   help="HxW input of inference/train/postproc (default 800x1216; --tiny 128x160)")
    p.add_argument("--memory-size", type=parse_size, default=None,
                   help="HxW input of the memory section (default 800x1333; --tiny 128x160)")
    p.add_argument("--num-people", type=int, default=10,
                   help="detections forced through the mask/keypoint heads (default %(default)s)")
    p.add_argument("--train-images", type=int, default=2, help="images per training batch")
    p.add_argument("--train-people", type=int, default=3,
                   help="ground-truth people per training image")
    p.add_argument("--tv-backbone", default="frozen", choices=["frozen", "builder"],
                   help="torchvision backbone: 'frozen' (default) = what keypointrcnn_resnet50_fpn "
                        "builds when given ImageNet backbone weights (FrozenBN, stem+layer1 "
                        "frozen, as our FREEZE_AT=2), without the weights; 'builder' = the public "
                        "builder with weights_backbone=None (BatchNorm2d, all layers trainable)")
    p.add_argument("--boxes", default="people", choices=["people", "model"],
                   help="'people' (default): after each model's own RPN + box head + NMS have "
                        "picked the N detections, their coordinates are replaced by the same N "
                        "person-shaped boxes for every model, so mask pasting and keypoint "
                        "decoding (whose cost grows with the box size in torchvision) see "
                        "realistic, identical boxes; 'model': keep the random model's boxes "
                        "(degenerate: 0-px-wide or image-tall)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="./output/benchmark.json", help="JSON with all raw numbers")
    return p


def settings_from_args(args) -> Settings:
    """:class:`Settings` of the parsed arguments, with the (tiny or full) defaults filled in."""
    return Settings(
        device=args.device,
        amp=args.amp,
        threads=args.threads if args.threads is not None else (1 if args.tiny else 2),
        repeats=args.repeats if args.repeats is not None else (2 if args.tiny else 5),
        warmup=args.warmup if args.warmup is not None else (0 if args.tiny else 1),
        size=args.size or (TINY_SIZE if args.tiny else (800, 1216)),
        memory_size=args.memory_size or (TINY_SIZE if args.tiny else (800, 1333)),
        num_people=args.num_people,
        train_images=args.train_images,
        train_people=args.train_people,
        tiny=args.tiny,
        tv_backbone=args.tv_backbone,
        boxes=args.boxes,
        seed=args.seed,
    )


def parse_args(argv: Optional[Sequence[str]]) -> Tuple[List[str], Settings, str]:
    """The selected sections, the settings and the output path; exits with a usage error on
    invalid arguments."""
    parser = build_parser()
    args = parser.parse_args(argv)
    sections = [x.strip() for x in args.sections.split(",") if x.strip()]
    unknown = [x for x in sections if x not in SECTIONS]
    if unknown or not sections:
        parser.error(f"--sections: unknown {unknown}; choose from {','.join(SECTIONS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.amp and amp_dtype(torch.device(args.device)) is None:
        parser.error("--amp: this CPU has no native bfloat16 (AVX512-BF16 / AMX)")
    if ((args.threads is not None and args.threads < 1) or args.num_people < 1
            or args.train_images < 1 or args.train_people < 1):
        parser.error("--threads, --num-people, --train-images and --train-people must be >= 1")
    s = settings_from_args(args)
    if s.repeats < 1 or s.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return sections, s, args.output


def write_json(path: Path, data: Dict[str, object]) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def section_runners(s: Settings, env) -> Dict[str, Callable[[], Dict[str, object]]]:
    """``{section: callable returning its JSON entry}``; the sections share one model cache."""
    cache = ModelCache(s)
    return {
        "inference": lambda: section_inference(s, env, cache),
        "train": lambda: section_train(s, env),
        "postproc": lambda: section_postproc(s, env, cache),
        "memory": lambda: section_memory(s, env),
        "ops": lambda: section_ops(s, env),
        "amp": lambda: section_amp(s, env),
        "tracking": lambda: section_tracking(s, env, cache),
    }


def run_section(name: str, runner: Callable[[], Dict[str, object]], env) -> Dict[str, object]:
    """``runner()``; a section that raises prints ``FAILED`` and gives ``{"error": ...}``."""
    try:
        return runner()
    except Exception as exc:  # noqa: BLE001  (the other sections still run; exit code 1)
        log(f"section {name} FAILED:\n{traceback.format_exc()}")
        print(header(name, env))
        print(f"FAILED: {short_error(exc)}\n", flush=True)
        return {"error": short_error(exc)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the selected sections, print their tables, write the JSON; 1 when anything failed."""
    sections, s, output = parse_args(argv)
    setup_threads(s.threads)

    env = environment(s)
    out_path = Path(output)
    data: Dict[str, object] = {
        "meta": {
            **env,
            "argv": [sys.argv[0]] + list(argv if argv is not None else sys.argv[1:]),
            "settings": asdict(s),
            "sections": sections,
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "load_avg_start": load_average(),
        }
    }
    log(f"sections {sections}; device {s.device}, {s.threads} threads, size {s.size}, "
        f"{s.num_people} people, {s.repeats} repeats, {s.warmup} warm-up"
        + (" (tiny)" if s.tiny else ""))
    runners = section_runners(s, env)
    failures: List[str] = []
    for name in SECTIONS:
        if name not in sections:
            continue
        t0 = time.perf_counter()
        log(f"--- section {name}")
        data[name] = run_section(name, runners[name], env)
        for model, err in (data[name].get("errors") or {}).items():
            failures.append(f"{name}/{model}: {err}")
        if "error" in data[name]:
            failures.append(f"{name}: {data[name]['error']}")
        data[name]["section_seconds"] = time.perf_counter() - t0
        data[name]["load_avg_end"] = load_average()
        data["meta"]["load_avg_end"] = load_average()
        data["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
        data["meta"]["failures"] = failures
        write_json(out_path, data)  # after every section: partial results survive
        log(f"--- section {name} done in {time.perf_counter() - t0:.1f} s; wrote {out_path}")
    if failures:
        log("FAILURES:\n  " + "\n  ".join(failures))
        return 1
    return 0
