"""ROI poolers: ROIAlignV2 samples the features under the box, ROIAlign half a stride off;
both pick torchvision's levels, and ROIAlign pools exactly what torchvision's pooler pools."""

from collections import OrderedDict

import pytest
import torch
from tiny_model import TINY_MODEL
from torchvision.ops import MultiScaleRoIAlign

from multitask import build_model, get_cfg
from multitask.modeling.roi_heads.poolers import FPNRoIAlign, build_pooler

IMAGE = 1024
STRIDES = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
# a box per FPN level (torchvision's level rule, canonical 224 at level 4): side -> level
BOXES = {"p2": 40.0, "p3": 150.0, "p4": 300.0, "p5": 600.0}


def _x_of_cell_centres():
    """FPN-like maps whose value is the image x of each feature cell's centre."""
    feats = OrderedDict()
    for name, s in STRIDES.items():
        n = IMAGE // s
        xs = (torch.arange(n, dtype=torch.float32) + 0.5) * s
        feats[name] = xs.view(1, 1, 1, n).expand(1, 1, n, n).contiguous()
    return feats


@pytest.mark.parametrize("pooler_type", ["ROIAlign", "ROIAlignV2"])
def test_pooled_position_per_level(pooler_type):
    pooler = build_pooler(pooler_type, list(STRIDES), 1, 2, "TEST.KEY")
    feats = _x_of_cell_centres()
    for name, side in BOXES.items():
        x0 = 233.0
        box = torch.tensor([[x0, 300.0, x0 + side, 300.0 + side]])
        pooled = pooler(feats, [box], [(IMAGE, IMAGE)]).item()
        centre = x0 + side / 2
        # ROIAlignV2: the mean x under the box is its centre; ROIAlign: half a stride to the right
        shift = 0.0 if pooler_type == "ROIAlignV2" else STRIDES[name] / 2
        assert pooled == pytest.approx(centre + shift, abs=1e-3), (name, pooled, centre)


def _feats_and_boxes():
    g = torch.Generator().manual_seed(0)
    feats = OrderedDict(
        (n, torch.randn(2, 3, IMAGE // s, IMAGE // s, generator=g)) for n, s in STRIDES.items()
    )
    sides = torch.tensor([40.0, 150.0, 300.0, 600.0, 90.0])
    boxes = [
        torch.stack([torch.full((5,), 100.0), torch.full((5,), 50.0), 100 + sides, 50 + sides], 1)
        for _ in range(2)
    ]
    boxes[1] = boxes[1][:3] + 7.0
    return feats, boxes


def test_unaligned_pooler_is_torchvisions():
    """With aligned=False the pooler (and its fast CPU roi_align) reproduces torchvision's
    MultiScaleRoIAlign, values and feature gradients."""
    feats, boxes = _feats_and_boxes()
    grads = []
    outs = []
    for pooler in (FPNRoIAlign(list(STRIDES), 7, 2, aligned=False),
                   MultiScaleRoIAlign(list(STRIDES), 7, 2)):
        fs = OrderedDict((n, f.clone().requires_grad_()) for n, f in feats.items())
        out = pooler(fs, boxes, [(IMAGE, IMAGE)] * 2)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        outs.append(out)
        grads.append([f.grad for f in fs.values()])
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_aligned_pooler_matches_torchvision_levels_and_batches():
    """Same level assignment and per-image batching as torchvision's pooler; several boxes."""
    feats, boxes = _feats_and_boxes()
    ours = FPNRoIAlign(list(STRIDES), 7, 2)
    theirs = MultiScaleRoIAlign(list(STRIDES), 7, 2)
    a = ours(feats, boxes, [(IMAGE, IMAGE)] * 2)
    b = theirs(feats, boxes, [(IMAGE, IMAGE)] * 2)
    assert a.shape == b.shape == (8, 3, 7, 7)
    assert ours.scales == theirs.scales
    assert torch.equal(ours.map_levels(boxes), theirs.map_levels(boxes))
    # the two conventions differ, but only by the half-cell shift: not by picking other levels
    # or other images (the shift is below a cell, so the pooled maps stay strongly correlated)
    for i in range(8):
        corr = torch.corrcoef(torch.stack([a[i].flatten(), b[i].flatten()]))[0, 1]
        assert corr > 0.3, i


def test_pooler_type_config_key():
    def build(pooler_type):
        cfg = get_cfg()
        cfg.merge_from_list(TINY_MODEL)
        for head in ("ROI_BOX_HEAD", "ROI_MASK_HEAD", "ROI_KEYPOINT_HEAD"):
            cfg.merge_from_list([f"MODEL.{head}.POOLER_TYPE", pooler_type])
        return build_model(cfg).roi_heads

    for pooler_type, aligned in (("ROIAlignV2", True), ("ROIAlign", False)):
        heads = build(pooler_type)
        for p in (heads.box_roi_pool, heads.mask_roi_pool, heads.keypoint_roi_pool):
            assert isinstance(p, FPNRoIAlign) and p.aligned is aligned
    with pytest.raises(ValueError, match="MODEL.ROI_BOX_HEAD.POOLER_TYPE.*ROIAlignV3"):
        build("ROIAlignV3")
