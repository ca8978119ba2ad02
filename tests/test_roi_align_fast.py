"""The fast CPU ROIAlign computes torchvision's roi_align: values and input gradients."""

import pytest
import torch
from torchvision.ops import roi_align

from multitask.modeling.layers import roi_align_fast as raf
from multitask.modeling.layers.roi_align_fast import roi_align_auto, roi_align_fast


def _case(seed, dtype, n=2, c=5):
    """Random features and boxes, some partly or wholly outside the map, some degenerate."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(v) for v in torch.randint(3, 30, (2,), generator=g))
    scale = (1.0, 0.5, 0.25)[seed % 3]
    feat = torch.randn(n, c, h, w, generator=g, dtype=dtype)
    extent = torch.tensor([w / scale, h / scale], dtype=dtype)
    r = 13
    xy = (torch.rand(r, 2, generator=g, dtype=dtype) * 1.4 - 0.2) * extent
    wh = torch.rand(r, 2, generator=g, dtype=dtype) * 20 / scale - 1.0  # a few have x2 < x1
    rois = torch.cat([torch.randint(0, n, (r, 1), generator=g).to(dtype), xy, xy + wh], 1)
    out_hw = tuple(int(v) for v in torch.randint(1, 8, (2,), generator=g))
    ratio = int(torch.randint(1, 4, (1,), generator=g))
    return feat, rois, out_hw, scale, ratio


def _run(fn, feat, rois, out_hw, scale, ratio, aligned):
    x = feat.clone().requires_grad_()
    out = fn(x, rois, out_hw, scale, ratio, aligned)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
    return out, x.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_matches_torchvision(seed, aligned, dtype):
    case = _case(seed, dtype)
    out, grad = _run(roi_align_fast, *case, aligned)
    ref_out, ref_grad = _run(roi_align, *case, aligned)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    assert out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, **tol)
    torch.testing.assert_close(grad, ref_grad, **tol)


def test_box_list_and_empty_inputs():
    feat, rois, out_hw, scale, ratio = _case(0, torch.float32)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(feat.shape[0])]
    ordered = torch.cat([rois[rois[:, 0] == i] for i in range(feat.shape[0])])
    torch.testing.assert_close(
        roi_align_fast(feat, per_image, out_hw, scale, ratio, True),
        roi_align(feat, ordered, out_hw, scale, ratio, True),
    )
    empty = roi_align_fast(feat, rois[:0], 7, scale, 2, True)
    assert empty.shape == (0, feat.shape[1], 7, 7)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_fast(feat, rois, 7, scale, 0, True)
    with pytest.raises(ValueError, match=r"\(K, 5\)"):
        roi_align_fast(feat, rois[:, :4], 7, scale, 2, True)
    bad = rois.clone()
    bad[0, 0] = feat.shape[0]
    with pytest.raises(ValueError, match="batch indices"):
        roi_align_fast(feat, bad, 7, scale, 2, True)
    # boxes in another float dtype than the features are cast, as torchvision requires one dtype
    torch.testing.assert_close(roi_align_fast(feat, rois.double(), 7, scale, 2, True),
                               roi_align(feat, rois, 7, scale, 2, True))


def test_auto_dispatch(monkeypatch):
    feat, rois, out_hw, scale, _ = _case(1, torch.float32)
    calls = []
    real = raf.roi_align_fast
    monkeypatch.setattr(raf, "roi_align_fast", lambda *a: calls.append(a) or real(*a))
    roi_align_auto(feat, rois, out_hw, scale, 2, True)
    assert len(calls) == 1
    # adaptive sampling (ratio <= 0) and a disabled fast path go to torchvision
    torch.testing.assert_close(
        roi_align_auto(feat, rois, out_hw, scale, -1, True),
        roi_align(feat, rois, out_hw, scale, -1, True),
    )
    raf.set_fast_cpu_roi_align(False)
    try:
        assert not raf.fast_cpu_roi_align_enabled()
        roi_align_auto(feat, rois, out_hw, scale, 2, True)
    finally:
        raf.set_fast_cpu_roi_align(True)
    assert len(calls) == 1
