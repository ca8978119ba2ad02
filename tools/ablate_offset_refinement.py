#!/usr/bin/env python
"""Train the same model with heatmap offset refinement on and off; print keypoint AP for both.

Both runs use the same config, seed, data and iteration budget; only
``MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT`` differs. The report claims refinement helps; this
measures it.

    python tools/ablate_offset_refinement.py \
        --config-file configs/quickstart/multitask_R_18_FPN_synthetic.yaml [KEY VALUE ...]
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]


def last_eval_record(output_dir: str) -> dict:
    """The final evaluation record that tools/train_net.py appends to metrics.json."""
    path = os.path.join(output_dir, "metrics.json")
    with open(path) as f:
        records = [json.loads(line) for line in f if line.strip()]
    evals = [r for r in records if any(k.endswith("/AP") for k in r)]
    if not evals:
        raise RuntimeError(f"No evaluation results in {path}")
    return evals[-1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config-file", default=str(REPO / "configs/quickstart/multitask_R_18_FPN_synthetic.yaml")
    )
    parser.add_argument("--output-dir", default="./output/ablate_offset_refinement")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    rows, results = [], {}
    for refine in (True, False):
        name = "offsets_on" if refine else "offsets_off"
        out = os.path.join(args.output_dir, name)
        cmd = [
            sys.executable,
            str(REPO / "tools" / "train_net.py"),
            "--config-file",
            args.config_file,
            *args.opts,
            "MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT",
            str(refine),
            "OUTPUT_DIR",
            out,
        ]
        print(f"[{name}] {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO)
        if proc.returncode != 0:
            print(f"[{name}] training failed with exit code {proc.returncode}", file=sys.stderr)
            return proc.returncode
        record = last_eval_record(out)
        results[name] = record
        rows.append(
            [
                name,
                *(record.get(f"{task}/AP", float("nan")) for task in ("keypoints", "bbox", "segm")),
                record.get("keypoints/AP50", float("nan")),
                record.get("keypoints/AP75", float("nan")),
                f"{time.perf_counter() - start:.0f}",
            ]
        )
    headers = ["run", "keypoint AP", "box AP", "mask AP", "kp AP50", "kp AP75", "wall s"]
    print(tabulate(rows, headers=headers, floatfmt=".2f", tablefmt="pipe"))
    on, off = (results[k]["keypoints/AP"] for k in ("offsets_on", "offsets_off"))
    print(f"Offset refinement: keypoint AP {on:.2f} vs {off:.2f} without ({on - off:+.2f})")
    with open(os.path.join(args.output_dir, "ablation.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
