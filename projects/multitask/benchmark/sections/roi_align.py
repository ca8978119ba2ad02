"""The ``ops`` section's second table: torchvision's ``roi_align`` vs ours
(:func:`~multitask.modeling.layers.roi_align_fast.roi_align_fast`, what the ROI poolers run on
CPU), forward and forward + backward, ROIAlignV2 with 2x2 samples per bin."""

from typing import Dict, List

import torch
from torchvision.ops import roi_align

from multitask.modeling.layers.roi_align_fast import roi_align_fast

from ..harness import ratio, run_interleaved, stats_or_error
from ..report import fmt_ms, fmt_ratio, header, table
from ..settings import Settings

# ROIAlign cases: (name, feature map (N, C, H, W), image (H, W), ROIs, output size); boxes of
# 16-160 px. "quickstart": one level of the quickstart's batch (P2 of four 224x288 images,
# 64 channels) with the box head's 128 ROIs and the mask / keypoint heads' ~32; "COCO": P2 of
# two 800x1216 images, 256 channels, with the 512 box ROIs and ~64 mask / keypoint ROIs.
FULL_ROI_CASES = (
    ("quickstart box", (4, 64, 56, 72), (224, 288), 128, 7),
    ("quickstart mask/kp", (4, 64, 56, 72), (224, 288), 32, 14),
    ("COCO box", (2, 256, 200, 304), (800, 1216), 512, 7),
    ("COCO mask/kp", (2, 256, 200, 304), (800, 1216), 64, 14),
)
TINY_ROI_CASES = (("tiny", (2, 16, 32, 40), (128, 160), 24, 7),)


def roi_case(feature_shape, image_hw, num_rois: int, seed: int):
    """Random features of ``feature_shape`` and ``num_rois`` (batch index, XYXY) ROIs of
    16-160 px inside an image of ``image_hw``."""
    g = torch.Generator().manual_seed(seed)
    n = feature_shape[0]
    feat = torch.randn(feature_shape, generator=g)
    side = 16 + 144 * torch.rand(num_rois, 2, generator=g)
    xy = torch.rand(num_rois, 2, generator=g) * (torch.tensor(image_hw[::-1]) - side)
    img = torch.randint(0, n, (num_rois, 1), generator=g).float()
    return feat, torch.cat([img, xy, xy + side], 1)


def _case_rows(s: Settings, case) -> List[Dict[str, object]]:
    """The forward and the forward + backward rows of one case: both kernels, interleaved."""
    device = torch.device(s.device)
    name, shape, image_hw, num_rois, size = case
    feat, rois = roi_case(shape, image_hw, num_rois, s.seed)
    feat, rois = feat.to(device), rois.to(device)
    scale = shape[2] / image_hw[0]
    rows = []
    for backward in (False, True):
        def make(fn):
            def run():
                if not backward:
                    with torch.no_grad():
                        return fn(feat, rois, size, scale, 2, True)
                x = feat.clone().requires_grad_()
                out = fn(x, rois, size, scale, 2, True)
                out.backward(torch.ones_like(out))
                return None
            return run

        label = f"ops roi_align {name} {'fwd+bwd' if backward else 'fwd'}"
        times, _, errors = run_interleaved(
            {"torchvision": make(roi_align), "ours": make(roi_align_fast)}, s, label, device)
        tv, ours = (stats_or_error(times, errors, k) for k in ("torchvision", "ours"))
        rows.append({"case": name, "features": list(shape), "rois": num_rois,
                     "output": size, "pass": "fwd+bwd" if backward else "fwd",
                     "torchvision": tv, "ours": ours, "torchvision_over_ours": ratio(tv, ours)})
    return rows


def section_ops_roi_align(s: Settings, env) -> List[Dict[str, object]]:
    """torchvision's roi_align vs :func:`roi_align_fast` (what the poolers run on CPU), forward
    and forward + backward, ROIAlignV2 with 2x2 samples per bin."""
    rows = []
    for case in (TINY_ROI_CASES if s.tiny else FULL_ROI_CASES):
        rows += _case_rows(s, case)
    where = ("ours = roi_align_fast, what the ROI poolers run on CPU" if s.device == "cpu" else
             "ours = roi_align_fast (the poolers themselves use torchvision's kernel on CUDA)")
    print(header("ops", env, f"ROIAlignV2 (aligned, 2x2 samples per bin), median of {s.repeats} "
                             f"runs after {s.warmup} warm-up; {where}"))
    cells = [[r["case"], " x ".join(map(str, r["features"])), r["rois"],
              f"{r['output']}x{r['output']}", r["pass"], fmt_ms(r["torchvision"])[0],
              fmt_ms(r["ours"])[0], fmt_ratio(r["torchvision_over_ours"])] for r in rows]
    print(table(cells, ["case", "features (N x C x H x W)", "ROIs", "output", "pass",
                        "torchvision ms", "ours ms", "torchvision / ours"]))
    print(flush=True)
    return rows
