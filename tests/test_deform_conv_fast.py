"""deform_conv2d_fast against torchvision.ops.deform_conv2d: values and all gradients."""

import pytest
import torch
from torchvision.ops import deform_conv2d

from multitask.modeling.layers import deform_conv_fast as dcf
from multitask.modeling.layers.deform_conv_fast import (
    deform_conv2d_auto,
    deform_conv2d_fast,
    fast_cpu_deform_conv_enabled,
    set_fast_cpu_deform_conv,
)


def _out_size(size, k, s, p, d):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _make_case(n=2, c=6, o=4, h=7, w=8, k=(3, 3), stride=(1, 1), padding=(1, 1),
               dilation=(1, 1), offset_groups=1, weight_groups=1, offset_scale=2.5,
               with_mask=True, with_bias=True, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ho = _out_size(h, k[0], stride[0], padding[0], dilation[0])
    wo = _out_size(w, k[1], stride[1], padding[1], dilation[1])
    kk = k[0] * k[1]
    tensors = {
        "input": torch.randn(n, c, h, w, generator=gen, dtype=dtype),
        "offset": torch.randn(n, 2 * offset_groups * kk, ho, wo, generator=gen, dtype=dtype)
        * offset_scale,
        "weight": torch.randn(o, c // weight_groups, k[0], k[1], generator=gen, dtype=dtype),
        "mask": torch.rand(n, offset_groups * kk, ho, wo, generator=gen, dtype=dtype)
        if with_mask else None,
        "bias": torch.randn(o, generator=gen, dtype=dtype) if with_bias else None,
    }
    kwargs = dict(stride=stride, padding=padding, dilation=dilation)
    return tensors, kwargs


def _assert_rel_close(actual, expected, rtol=1e-4, what=""):
    """max |actual - expected| <= rtol * max |expected| (and same shape)."""
    assert actual.shape == expected.shape, what
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= rtol * max(scale, 1e-6), f"{what}: max err {err:.3e}, max |ref| {scale:.3e}"


def _check_against_torchvision(tensors, kwargs, rtol=1e-4, channels_last=False):
    names = [k for k, v in tensors.items() if v is not None]
    results = []
    for fn in (deform_conv2d, deform_conv2d_fast):
        leaves = {k: v.clone().requires_grad_(True) for k, v in tensors.items() if v is not None}
        if channels_last and fn is deform_conv2d_fast:
            leaves["input"] = leaves["input"].detach().contiguous(
                memory_format=torch.channels_last).requires_grad_(True)
        out = fn(leaves["input"], leaves["offset"], leaves["weight"], leaves.get("bias"),
                 mask=leaves.get("mask"), **kwargs)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1),
                               dtype=out.dtype)
        grads = torch.autograd.grad(out, [leaves[k] for k in names], grad_out)
        results.append((out, grads))
    (ref, ref_grads), (out, grads) = results
    _assert_rel_close(out, ref, rtol, "output")
    # a channels-last input gives a channels-last output (one weight group), else contiguous
    cl_out = channels_last and tensors["weight"].shape[1] == tensors["input"].shape[1]
    assert out.is_contiguous(memory_format=torch.channels_last if cl_out else
                             torch.contiguous_format)
    for name, g, rg in zip(names, grads, ref_grads):
        _assert_rel_close(g, rg, rtol, f"grad {name}")


CASES = {
    "basic": {},
    "batch1_large_offsets": dict(n=1, offset_scale=6.0),
    "offset_groups3": dict(offset_groups=3),
    "weight_groups2": dict(weight_groups=2),
    "offset_groups2_weight_groups3": dict(offset_groups=2, weight_groups=3, o=6),
    "offset_groups3_weight_groups2": dict(offset_groups=3, weight_groups=2, c=12),
    "stride2_pad0": dict(stride=(2, 2), padding=(0, 0), h=9, w=10),
    "dilation2_pad2": dict(dilation=(2, 2), padding=(2, 2)),
    "stride_dilation_mixed": dict(stride=(2, 1), dilation=(1, 2), padding=(1, 2)),
    "kernel3x1": dict(k=(3, 1), padding=(1, 0)),
    "kernel1x2_pad0": dict(k=(1, 2), padding=(0, 0)),
    "kernel1x1": dict(k=(1, 1), padding=(0, 0)),
    "no_mask": dict(with_mask=False),
    "no_bias": dict(with_bias=False),
    "no_mask_no_bias": dict(with_mask=False, with_bias=False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_torchvision_float64(case):
    tensors, kwargs = _make_case(**CASES[case])
    _check_against_torchvision(tensors, kwargs)


def test_matches_torchvision_float32():
    tensors, kwargs = _make_case(n=2, c=16, o=8, h=12, w=11, offset_groups=2,
                                 dtype=torch.float32)
    _check_against_torchvision(tensors, kwargs, rtol=1e-4)


def test_mixed_dtypes_under_cpu_autocast_compute_in_float32():
    """Under bfloat16 autocast the offsets and mask come from bfloat16 convs while the input is
    float32; the op computes in float32 (as torchvision's does) and keeps the input's dtype."""
    tensors, kwargs = _make_case(n=1, c=8, o=4, h=9, w=9, dtype=torch.float32)
    ref = deform_conv2d_fast(tensors["input"], tensors["offset"], tensors["weight"],
                             tensors["bias"], mask=tensors["mask"], **kwargs)
    offset = tensors["offset"].bfloat16().requires_grad_(True)
    x = tensors["input"].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = deform_conv2d_fast(x, offset, tensors["weight"], tensors["bias"],
                                 mask=tensors["mask"].bfloat16(), **kwargs)
    assert out.dtype == torch.float32
    _assert_rel_close(out, ref, rtol=2e-2, what="bfloat16 offsets and mask")
    out.sum().backward()
    assert x.grad.dtype == torch.float32 and offset.grad.dtype == torch.bfloat16


def test_integer_offsets_on_image_border():
    """Samples exactly on integer positions, the border (-1, H) and far outside."""
    tensors, kwargs = _make_case(n=1, c=4, o=3, h=5, w=6, offset_scale=3.0)
    tensors["offset"] = tensors["offset"].round()
    tensors["offset"][0, 0, 0, 0] = -1.0  # y of tap (0, 0) at pixel (0, 0): -2 -> outside
    tensors["offset"][0, 1, 0, 1] = 0.0
    _check_against_torchvision(tensors, kwargs)


@pytest.mark.parametrize("case", ["basic", "no_bias", "offset_groups3", "weight_groups2",
                                  "stride2_pad0", "batch1_large_offsets"])
def test_channels_last_input(case):
    """Channels-last inputs (the model's CPU inference layout): the same values and gradients;
    the output is channels-last too, written by the GEMM as (pixels, channels) rows."""
    tensors, kwargs = _make_case(**CASES[case])
    _check_against_torchvision(tensors, kwargs, channels_last=True)


def test_channels_last_chunked(monkeypatch):
    monkeypatch.setattr(dcf, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(dcf, "_MIN_CHUNK_PIXELS", 1)
    tensors, kwargs = _make_case(n=2, h=6, w=5)
    _check_against_torchvision(tensors, kwargs, channels_last=True)


@pytest.mark.parametrize("groups", [dict(), dict(offset_groups=2, weight_groups=3, o=6)])
def test_chunked_path(monkeypatch, groups):
    """One output row per chunk (the chunking used for large feature maps)."""
    monkeypatch.setattr(dcf, "_CHUNK_BYTES", 1)
    monkeypatch.setattr(dcf, "_MIN_CHUNK_PIXELS", 1)
    tensors, kwargs = _make_case(n=2, h=6, w=5, **groups)
    _check_against_torchvision(tensors, kwargs)


def test_single_image_single_chunk_with_bias():
    tensors, kwargs = _make_case(n=1, c=8, o=5, h=6, w=7, offset_groups=2)
    _check_against_torchvision(tensors, kwargs)


def test_partial_requires_grad():
    """Only some inputs need gradients (e.g. frozen weights)."""
    tensors, kwargs = _make_case(n=1)
    x = tensors["input"].clone().requires_grad_(True)
    off = tensors["offset"].clone().requires_grad_(True)
    out = deform_conv2d_fast(x, off, tensors["weight"], tensors["bias"], mask=tensors["mask"],
                             **kwargs)
    ref = deform_conv2d(x, off, tensors["weight"], tensors["bias"], mask=tensors["mask"],
                        **kwargs)
    g = torch.autograd.grad(out.sum(), [x, off])
    rg = torch.autograd.grad(ref.sum(), [x, off])
    for a, b in zip(g, rg):
        _assert_rel_close(a, b)


def test_gradcheck_small():
    """Finite differences, independent of torchvision (fast mode: random projections)."""
    tensors, kwargs = _make_case(n=1, c=2, o=2, h=4, w=4, offset_groups=2, offset_scale=1.3)
    inputs = [tensors[k].clone().requires_grad_(True)
              for k in ("input", "offset", "weight", "bias", "mask")]

    def fn(x, off, w, b, m):
        return deform_conv2d_fast(x, off, w, b, mask=m, **kwargs)

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, fast_mode=True)


def test_int_arguments_and_errors():
    tensors, _ = _make_case(n=1, stride=(2, 2), padding=(1, 1))
    out = deform_conv2d_fast(tensors["input"], tensors["offset"], tensors["weight"],
                             stride=2, padding=1, mask=tensors["mask"])
    ref = deform_conv2d(tensors["input"], tensors["offset"], tensors["weight"], stride=2,
                        padding=1, mask=tensors["mask"])
    _assert_rel_close(out, ref)
    with pytest.raises(ValueError):
        deform_conv2d_fast(tensors["input"], tensors["offset"][:, :-1], tensors["weight"],
                           stride=2, padding=1)
    with pytest.raises(ValueError):
        deform_conv2d_fast(tensors["input"], tensors["offset"], tensors["weight"], padding=1)


def test_auto_dispatch(monkeypatch):
    tensors, kwargs = _make_case(n=1)
    calls = []

    def spy_fast(*args, **kw):
        calls.append("fast")
        return deform_conv2d_fast(*args, **kw)

    def spy_tv(*args, **kw):
        calls.append("tv")
        return deform_conv2d(*args, **kw)

    monkeypatch.setattr(dcf, "deform_conv2d_fast", spy_fast)
    monkeypatch.setattr(dcf, "_tv_deform_conv2d", spy_tv)
    args = (tensors["input"], tensors["offset"], tensors["weight"], tensors["bias"])
    ref = deform_conv2d(*args, mask=tensors["mask"], **kwargs)
    previous = fast_cpu_deform_conv_enabled()
    try:
        set_fast_cpu_deform_conv(True)
        assert fast_cpu_deform_conv_enabled()
        _assert_rel_close(deform_conv2d_auto(*args, mask=tensors["mask"], **kwargs), ref)
        assert calls == ["fast"]
        set_fast_cpu_deform_conv(False)
        assert not fast_cpu_deform_conv_enabled()
        _assert_rel_close(deform_conv2d_auto(*args, mask=tensors["mask"], **kwargs), ref)
        assert calls == ["fast", "tv"]
    finally:
        set_fast_cpu_deform_conv(previous)


def test_auto_dispatch_non_cpu_uses_torchvision(monkeypatch):
    """Tensors on another device (meta here, CUDA in practice) go to torchvision's kernel."""
    calls = []
    monkeypatch.setattr(dcf, "_tv_deform_conv2d", lambda *a, **k: calls.append("tv") or "tv")
    monkeypatch.setattr(dcf, "deform_conv2d_fast", lambda *a, **k: calls.append("fast"))
    x = torch.empty(1, 4, 5, 5, device="meta")
    off = torch.empty(1, 18, 5, 5, device="meta")
    w = torch.empty(3, 4, 3, 3, device="meta")
    previous = fast_cpu_deform_conv_enabled()
    try:
        set_fast_cpu_deform_conv(True)
        assert deform_conv2d_auto(x, off, w, padding=(1, 1)) == "tv"
    finally:
        set_fast_cpu_deform_conv(previous)
    assert calls == ["tv"]


@pytest.mark.parametrize("value,expected", [(None, True), ("1", True), ("0", False),
                                            ("false", False), ("off", False), ("yes", True)])
def test_env_switch(value, expected):
    env = {} if value is None else {"MULTITASK_FAST_DEFORM": value}
    assert dcf._enabled_from_env(env) is expected
