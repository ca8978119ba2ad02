#!/usr/bin/env python
"""Parameter counts and inference time of one or more configs, side by side (like detectron2's
``tools/analyze_model.py``). Random weights; the input is a random image of ``--size``.

    python tools/analyze_model.py --size 800x1216 \
        --config-file configs/COCO-MultiTask/multitask_R_50_FPN_1x.yaml \
        --config-file configs/COCO-MultiTask/multitask_R_50_FPN_1x_dconv_c3-c5_dconv_head.yaml
"""

import argparse
import os
import platform
import statistics
import time

import torch
from tabulate import tabulate

from multitask import build_model, get_cfg
from multitask.modeling import count_parameters


def time_once(model, image: torch.Tensor) -> float:
    inputs = [{"image": image, "height": image.shape[1], "width": image.shape[2]}]
    with torch.inference_mode():
        if image.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(inputs)
        if image.device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - start, len(out[0]["instances"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config-file", action="append", required=True)
    parser.add_argument("--size", default="800x1216", help="input HxW")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--num-people", type=int, default=10, help="detections per image")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for all")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=args.device)
    models = []
    for path in args.config_file:
        cfg = get_cfg()
        cfg.merge_from_file(path)
        # exactly N people through the mask/keypoint heads, whatever the random weights score
        n = str(args.num_people)
        cfg.merge_from_list(
            ["MODEL.DEVICE", args.device, "INPUT.MIN_SIZE_TEST", str(h)]
            + ["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0", "MODEL.ROI_HEADS.NMS_THRESH_TEST", "1.0"]
            + ["MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", n]
            + args.opts
        )
        models.append((path, build_model(cfg).eval()))
    # rounds alternate between the models so that a busy machine slows them alike
    times = {path: [] for path, _ in models}
    counts = {}
    for r in range(args.warmup + args.repeats):
        for path, model in models:
            t, counts[path] = time_once(model, image)
            if r >= args.warmup:
                times[path].append(t)
    rows = []
    for path, model in models:
        ts = times[path]
        rows.append(
            [
                os.path.basename(path),
                f"{count_parameters(model) / 1e6:.2f}",
                f"{count_parameters(model.backbone) / 1e6:.2f}",
                counts[path],
                f"{statistics.median(ts) * 1000:.0f}",
                f"{min(ts) * 1000:.0f}-{max(ts) * 1000:.0f}",
            ]
        )
    print(
        f"device: {args.device}, threads: {args.threads}, input {h}x{w}, "
        f"{args.repeats} runs after {args.warmup} warm-up, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )
    headers = ["config", "params (M)", "backbone (M)", "people", "forward median ms", "min-max ms"]
    print(tabulate(rows, headers=headers, tablefmt="pipe"))


if __name__ == "__main__":
    main()
