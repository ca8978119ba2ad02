"""Fast pure-PyTorch modulated deformable convolution (DCNv2) for CPU.

``deform_conv2d_fast`` computes what ``torchvision.ops.deform_conv2d`` computes (same arguments,
same offset/mask layout, same zero padding of bilinear samples outside the image, same
gradients) but is built from a few large, well-optimised ATen kernels instead of torchvision's
scalar CPU loops:

1. The input is transposed once to a zero-bordered channels-last table of ``(H + 4) * (W + 4)``
   rows of ``C`` channels. The border makes every bilinear corner index valid: a sample far
   outside the image is clamped onto border rows, which are zero, so no validity masks are
   needed. This is torchvision's rule (a sample at ``(y, x)`` contributes only if
   ``-1 < y < H`` and ``-1 < x < W``; corners outside the image read as zero).
2. For each output pixel, offset group and kernel tap the 4 corner row indices and the 4
   bilinear weights (times the modulation mask) are computed with ~25 vectorised ops on
   (Ho, Wo, G, K) planes.
3. ``F.embedding_bag(mode="sum", per_sample_weights=...)`` gathers the 4 corner rows, weights
   and sums them in one pass, writing an im2col matrix (pixels, K * C) whose rows are
   channels-last (group, tap, channel) -- every gathered row is a contiguous run of channels.
4. One GEMM with the reordered weight (O, K * C) gives the output directly in (O, pixels)
   order, i.e. contiguous NCHW. For float32 the GEMM runs on oneDNN when available
   (``torch.ops.mkldnn._linear_pointwise``; on AMD CPUs it is ~1.2x faster than MKL's sgemm
   and on par with the dense convolution), otherwise ``torch.mm``.

The im2col matrix is processed in chunks of whole output rows (~8 MB each) so that it stays
in cache and no huge buffer is page-faulted in on every call.

The backward pass is hand-written in a ``torch.autograd.Function``: it re-gathers the columns
chunk by chunk (nothing big is saved for backward), uses two GEMMs for the weight and column
gradients, the per-sample-weight backward of ``embedding_bag`` for the gradients of the
bilinear weights (mapped to offset and mask gradients analytically) and a sort followed by an
``embedding_bag`` over the column gradients -- a transposed gather, no ``index_add_`` -- for
the input gradient (both in :mod:`.row_gather`). Double backward is not supported.

``deform_conv2d_auto`` picks this implementation for CPU tensors and torchvision's kernel
otherwise; ``set_fast_cpu_deform_conv(False)`` or ``MULTITASK_FAST_DEFORM=0`` turns the fast
path off.
"""
import math
import os
from typing import List, Mapping, Optional, Tuple, Union

import torch
from torch.autograd.function import once_differentiable
from torchvision.ops import deform_conv2d as _tv_deform_conv2d

from .row_gather import capturing_graph, env_switch, gather_rows, is_channels_last, scatter_rows

__all__ = ["deform_conv2d_fast", "deform_conv2d_auto", "set_fast_cpu_deform_conv",
           "fast_cpu_deform_conv_enabled"]

# zero border (in pixels) around the channels-last table; 2 keeps both corners of any clamped
# sample position on zero rows
_BORDER = 2
# target size of one chunk of the im2col matrix
_CHUNK_BYTES = 8 << 20
# but never fewer output pixels than this in one chunk (GEMM efficiency)
_MIN_CHUNK_PIXELS = 1024


def _enabled_from_env(environ: Mapping[str, str]) -> bool:
    """``MULTITASK_FAST_DEFORM`` = 0 / false / off / no disables the fast path (default on)."""
    return env_switch(environ, "MULTITASK_FAST_DEFORM")


_fast_enabled = _enabled_from_env(os.environ)
_HAS_MKLDNN_LINEAR = hasattr(torch.ops.mkldnn, "_linear_pointwise")

IntPair = Union[int, Tuple[int, int], List[int]]


def set_fast_cpu_deform_conv(enabled: bool) -> None:
    """Enable or disable the fast CPU path used by :func:`deform_conv2d_auto`."""
    global _fast_enabled
    _fast_enabled = bool(enabled)


def fast_cpu_deform_conv_enabled() -> bool:
    """Whether :func:`deform_conv2d_auto` uses :func:`deform_conv2d_fast` for CPU tensors."""
    return _fast_enabled


def _pair(v: IntPair) -> Tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def _mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for ``a`` (M, K) and ``b`` (N, K) -> (M, N); oneDNN for float32 if possible."""
    if (_HAS_MKLDNN_LINEAR and a.dtype == torch.float32 and torch.backends.mkldnn.enabled
            and torch.backends.mkldnn.is_available()):
        return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    return torch.mm(a, b.t())


class _Geometry:
    """Static shapes of one deformable convolution call.

    ``Gp`` is the number of channel groups the gather works with: the least common multiple of
    the offset groups ``G`` and the weight groups ``Gw``, so that every gathered row of ``Cs``
    channels belongs to exactly one offset group and one weight group. The im2col matrix has
    one row per output pixel and ``L = Gp * K * Cs = K * C`` columns ordered (group, tap,
    channel); the columns of weight group ``gw`` are the contiguous block ``gw * L / Gw ...``.
    """

    def __init__(self, input, offset, weight, stride, padding, dilation):
        self.N, self.C, self.H, self.W = input.shape
        self.O, self.Cw, self.kh, self.kw = weight.shape
        self.K = self.kh * self.kw
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.Gw = self.C // self.Cw
        self.G = offset.shape[1] // (2 * self.K)
        self.Gp = self.G * self.Gw // math.gcd(self.G, self.Gw)
        self.r = self.Gp // self.G
        self.Cs = self.C // self.Gp
        self.Ho, self.Wo = offset.shape[-2:]
        self.P = self.Ho * self.Wo
        self.L = self.K * self.C
        self.Hp, self.Wp = self.H + 2 * _BORDER, self.W + 2 * _BORDER
        row_bytes = self.Wo * self.L * input.element_size()
        rows = max(_CHUNK_BYTES // max(row_bytes, 1), -(-_MIN_CHUNK_PIXELS // max(self.Wo, 1)))
        rows = max(1, min(self.Ho, rows))
        n_chunks = -(-self.Ho // rows) if self.Ho else 0
        rows = -(-self.Ho // n_chunks) if n_chunks else 1
        # output row ranges [r0, r1)
        self.chunks = [(r0, min(self.Ho, r0 + rows)) for r0 in range(0, self.Ho, rows)]

    def weight_matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """(O, Cw, kh, kw) -> (Gw, O / Gw, Cw * K) with columns ordered (group, tap, channel)."""
        g = self
        w = weight.reshape(g.O, g.Gp // g.Gw, g.Cs, g.K).transpose(2, 3)
        return w.reshape(g.Gw, g.O // g.Gw, g.Cw * g.K)

    def weight_from_matrix(self, wm: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`weight_matrix`: (Gw, O / Gw, Cw * K) -> (O, Cw, kh, kw)."""
        g = self
        w = wm.reshape(g.O, g.Gp // g.Gw, g.K, g.Cs).transpose(2, 3)
        return w.reshape(g.O, g.Cw, g.kh, g.kw)

    def table(self, input: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) -> zero-bordered channels-last (N, H + 4, W + 4, C)."""
        g, b = self, _BORDER
        t = input.new_empty(g.N, g.Hp, g.Wp, g.C)
        t[:, :b].zero_()
        t[:, b + g.H:].zero_()
        t[:, b:b + g.H, :b].zero_()
        t[:, b:b + g.H, b + g.W:].zero_()
        t[:, b:b + g.H, b:b + g.W].copy_(input.permute(0, 2, 3, 1))
        return t

    def sampling(self, offset: torch.Tensor, mask: Optional[torch.Tensor], r0: int = 0):
        """Corner rows and bilinear weights for output rows ``r0 ... r0 + R - 1`` of one image.

        (Used for whole images: per-chunk calls were measured slower, the planes are then too
        small for the elementwise ops to run multi-threaded.)

        Args:
            offset: (2 * G * K, R, Wo), torchvision layout ([y, x] per group and tap).
            mask: (G * K, R, Wo) or None.
            r0: first output row.

        Returns:
            idx: (R * Wo * Gp * K, 4) int64 rows of the (Hp * Wp * Gp, Cs) table view of the
                image, bags ordered (pixel, group, tap), corners (y0x0, y0x1, y1x0, y1x1).
            wts: (R * Wo * Gp * K, 4) bilinear weight times mask.
            aux: what :meth:`sampling_backward` needs: the fractional parts ``fy``, ``fx`` and
                the mask, each (R, Wo, G, K) (mask None if None).
        """
        g = self
        G, K, Wo, r = g.G, g.K, g.Wo, g.r
        Ho = offset.shape[-2]
        dt, dev = offset.dtype, offset.device
        # (Ho, Wo, G, K, 2): one small copy so that everything below is contiguous
        off = offset.reshape(G, K, 2, Ho, Wo).permute(3, 4, 0, 1, 2).contiguous()
        tap = torch.arange(K, device=dev)
        ky = (tap // g.kw).to(dt) * g.dilation[0]
        kx = (tap % g.kw).to(dt) * g.dilation[1]
        by = torch.arange(r0, r0 + Ho, device=dev, dtype=dt) * g.stride[0] - g.padding[0]
        bx = torch.arange(Wo, device=dev, dtype=dt) * g.stride[1] - g.padding[1]
        y = off[..., 0] + (by.view(Ho, 1, 1, 1) + ky)
        x = off[..., 1] + (bx.view(1, Wo, 1, 1) + kx)
        y0 = y.floor()
        x0 = x.floor()
        fy = y.sub_(y0)
        fx = x.sub_(x0)
        if mask is not None:
            m = mask.reshape(G, K, Ho, Wo).permute(2, 3, 0, 1)
            wy1 = m * fy
            wy0 = m - wy1
        else:
            m = None
            wy1 = fy
            wy0 = 1 - fy
        wx0 = 1 - fx
        # the 4 corner weights, written straight into the interleaved (.., r, K, 4) layout
        shape = (Ho, Wo, G, r, K)
        wts = offset.new_empty(shape + (4,))
        for c, (a, b) in enumerate(((wy0, wx0), (wy0, fx), (wy1, wx0), (wy1, fx))):
            torch.mul(a.unsqueeze(3).expand(shape), b.unsqueeze(3).expand(shape), out=wts[..., c])
        # clamp into [-2, H]: both corners then lie inside the zero-bordered table
        yi = y0.clamp_(-_BORDER, g.H).to(torch.int64)
        xi = x0.clamp_(-_BORDER, g.W).to(torch.int64)
        base = torch.add(xi, yi, alpha=g.Wp).unsqueeze(3)  # (Ho, Wo, G, 1, K)
        Gp, Wp = g.Gp, g.Wp
        if Gp > 1:
            base = base * Gp + torch.arange(Gp, device=dev).view(G, r, 1)
        base = base.expand(shape)
        first = (_BORDER * Wp + _BORDER) * Gp
        idx = torch.empty(Ho, Wo, G, r, K, 4, dtype=torch.int64, device=dev)
        for c, shift in enumerate((0, Gp, Wp * Gp, (Wp + 1) * Gp)):
            torch.add(base, first + shift, out=idx[..., c])
        return idx.view(-1, 4), wts.view(-1, 4), (fy, fx, m)

    def sampling_backward(self, aux, grad_wts: torch.Tensor, need_offset: bool,
                          need_mask: bool):
        """Gradients of :meth:`sampling`'s weights (R * Wo * Gp * K, 4) -> offset
        (2 * G * K, R, Wo) and mask (G * K, R, Wo) gradients (None where not needed)."""
        g = self
        G, K, Wo = g.G, g.K, g.Wo
        fy, fx, m = aux
        Ho = fy.shape[0]
        gw = grad_wts.view(Ho, Wo, G, g.r, K, 4).sum(3) if g.r > 1 else \
            grad_wts.view(Ho, Wo, G, K, 4)
        g0, g1, g2, g3 = gw.unbind(-1)
        wx0 = 1 - fx
        # d loss / d (bilinear weight along y of the lower / upper row), same along x
        gy0 = g0 * wx0 + g1 * fx
        gy1 = g2 * wx0 + g3 * fx
        grad_offset = grad_mask = None
        if need_offset:
            wy1 = fy if m is None else m * fy
            wy0 = 1 - fy if m is None else m - wy1
            d = gy1 - gy0
            gfy = d if m is None else d * m
            gfx = (g1 - g0) * wy0 + (g3 - g2) * wy1
            grad_offset = torch.stack((gfy, gfx), -1).permute(2, 3, 4, 0, 1)
            grad_offset = grad_offset.reshape(2 * G * K, Ho, Wo)
        if need_mask and m is not None:
            grad_mask = (gy0 + (gy1 - gy0) * fy).permute(2, 3, 0, 1).reshape(G * K, Ho, Wo)
        return grad_offset, grad_mask

    def gather(self, table: torch.Tensor, idx: torch.Tensor, wts: torch.Tensor) -> torch.Tensor:
        """im2col rows: table (Hp * Wp * Gp, Cs), idx / wts of :meth:`sampling`
        -> (pixels, K * C)."""
        return gather_rows(table, idx, wts).view(-1, self.L)

    def gemm(self, wm: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(Gw, O/Gw, L/Gw) x (Pc, L) -> (O, Pc)."""
        if self.Gw == 1:
            return _mm_nt(wm[0], cols)
        c = cols.view(-1, self.Gw, self.L // self.Gw).permute(1, 2, 0)
        return torch.matmul(wm, c).reshape(self.O, -1)

    def gemm_grad_cols(self, wm_t: torch.Tensor, go: torch.Tensor) -> torch.Tensor:
        """``wm_t`` = weight matrix transposed (Gw, L/Gw, O/Gw) contiguous, grad_out (O, Pc)
        -> grad of the im2col rows (Pc, L)."""
        if self.Gw == 1:
            return _mm_nt(go.t(), wm_t[0])
        gc = torch.matmul(go.view(self.Gw, self.O // self.Gw, -1).transpose(1, 2),
                          wm_t.transpose(1, 2))
        return gc.transpose(0, 1).reshape(-1, self.L)

    def gemm_grad_weight(self, go: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """grad_out (O, Pc), cols (Pc, L) -> (Gw, O/Gw, L/Gw)."""
        if self.Gw == 1:
            return _mm_nt(go, cols.t()).unsqueeze(0)
        c = cols.view(-1, self.Gw, self.L // self.Gw).transpose(0, 1)
        return torch.matmul(go.view(self.Gw, self.O // self.Gw, -1), c)


def _im2col_chunks(g: _Geometry, table, offset, mask):
    """Yield ``(n, r0, r1, cols)``: for each image ``n`` and chunk of output rows ``[r0, r1)``
    the im2col rows ``((r1 - r0) * Wo, K * C)`` of the forward pass."""
    bags_per_row = g.Wo * g.Gp * g.K
    for n in range(g.N):
        tab = table[n].view(-1, g.Cs)
        idx, wts, _ = g.sampling(offset[n], None if mask is None else mask[n], 0)
        for r0, r1 in g.chunks:
            bags = slice(r0 * bags_per_row, r1 * bags_per_row)
            yield n, r0, r1, g.gather(tab, idx[bags], wts[bags])


def _forward_channels_last(g: _Geometry, table, offset, mask, weight, bias) -> torch.Tensor:
    """:func:`_forward` for a channels-last input: each chunk's GEMM gives (pixels, O), rows of
    a channels-last output, so the output is channels-last at no cost (one weight group)."""
    out = torch.empty((g.N, g.O, g.Ho, g.Wo), dtype=table.dtype, device=table.device,
                      memory_format=torch.channels_last)
    rows = out.permute(0, 2, 3, 1).view(g.N, g.P, g.O)  # the output's own memory
    wmat = g.weight_matrix(weight)[0]  # (O, L)
    for n, r0, r1, cols in _im2col_chunks(g, table, offset, mask):
        res = _mm_nt(cols, wmat)  # ((r1 - r0) * Wo, O)
        dst = rows[n, r0 * g.Wo:r1 * g.Wo]
        if bias is None:
            dst.copy_(res)
        else:
            torch.add(res, bias, out=dst)
    return out


def _forward(g: _Geometry, input, offset, mask, weight, bias) -> torch.Tensor:
    """Deformable convolution without autograd -> (N, O, Ho, Wo), contiguous, or channels-last
    when the input is channels-last (and not also contiguous)."""
    table = g.table(input)
    if g.Gw == 1 and is_channels_last(input):
        return _forward_channels_last(g, table, offset, mask, weight, bias)
    wm = g.weight_matrix(weight)
    single = g.N == 1 and len(g.chunks) == 1
    out = None if single else input.new_empty(g.N, g.O, g.P)
    for n, r0, r1, cols in _im2col_chunks(g, table, offset, mask):
        res = g.gemm(wm, cols)  # (O, (r1 - r0) * Wo)
        if single:
            out = res.view(1, g.O, g.P)
            if bias is not None:
                out.add_(bias.view(1, -1, 1))
        elif bias is None:
            out[n, :, r0 * g.Wo:r1 * g.Wo].copy_(res)
        else:
            torch.add(res, bias.view(-1, 1), out=out[n, :, r0 * g.Wo:r1 * g.Wo])
    out = out.view(g.N, g.O, g.Ho, g.Wo)
    # Return a tensor that is not a view: a view made inside an autograd.Function may not be
    # modified in place, and the layers after a conv do that (ReLU(inplace=True)).
    return out if out._base is None else out.clone()


class _DeformConv2dFn(torch.autograd.Function):
    """Autograd wrapper: inputs (input, offset, mask, weight, bias, stride, padding, dilation)
    as in :func:`deform_conv2d_fast` (mask and bias may be None), output (N, O, Ho, Wo)."""

    @staticmethod
    def forward(ctx, input, offset, mask, weight, bias, stride, padding, dilation):
        g = _Geometry(input, offset, weight, stride, padding, dilation)
        ctx.geometry = g
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, offset, mask, weight)
        return _forward(g, input, offset, mask, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        input, offset, mask, weight = ctx.saved_tensors
        g = ctx.geometry
        need_in, need_off, need_mask, need_w, need_b = ctx.needs_input_grad[:5]
        need_geo = need_off or need_mask
        grad_out = grad_out.contiguous().view(g.N, g.O, g.P)

        grad_bias = grad_out.sum((0, 2)) if need_b and ctx.has_bias else None
        if not (need_in or need_geo or need_w):
            return None, None, None, None, grad_bias, None, None, None

        wm_t = g.weight_matrix(weight).transpose(1, 2).contiguous()
        table = g.table(input) if (need_geo or need_w) else None
        grad_table = input.new_zeros(g.N, g.Hp * g.Wp * g.Gp, g.Cs) if need_in else None
        grad_wm = weight.new_zeros(wm_t.transpose(1, 2).shape) if need_w else None
        grad_offset = torch.empty_like(offset) if need_off else None
        grad_mask = torch.empty_like(mask) if need_mask else None
        bags_per_row = g.Wo * g.Gp * g.K
        for n in range(g.N):
            tab = table[n].view(-1, g.Cs) if table is not None else None
            idx, wts, aux = g.sampling(offset[n], None if mask is None else mask[n], 0)
            grad_wts = torch.empty_like(wts) if need_geo else None
            for r0, r1 in g.chunks:
                bags = slice(r0 * bags_per_row, r1 * bags_per_row)
                idx_c, wts_c = idx[bags], wts[bags]
                # contiguous: oneDNN's GEMM is much slower on a strided slice
                go = grad_out[n, :, r0 * g.Wo:r1 * g.Wo].contiguous()
                if need_w:
                    grad_wm += g.gemm_grad_weight(go, g.gather(tab, idx_c, wts_c))
                if not (need_in or need_geo):
                    continue
                grad_cols = g.gemm_grad_cols(wm_t, go).view(-1, g.Cs)
                if need_geo:
                    # grad_wts[b, j] = <grad_cols[b], table[idx[b, j]]>
                    nb = idx_c.shape[0]
                    offsets = torch.arange(0, 4 * nb, 4, device=idx.device)
                    bag_of = torch.arange(nb, device=idx.device).repeat_interleave(4)
                    grad_wts[bags] = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                        grad_cols, tab, idx_c.reshape(-1), offsets, bag_of, 0, -1).view(-1, 4)
                if need_in:
                    scatter_rows(grad_table[n], idx_c, wts_c, grad_cols)
            if need_geo:
                go_n, gm_n = g.sampling_backward(aux, grad_wts, need_off, need_mask)
                if need_off:
                    grad_offset[n] = go_n
                if need_mask:
                    grad_mask[n] = gm_n

        grad_input = None
        if need_in:
            b = _BORDER
            grad_input = grad_table.view(g.N, g.Hp, g.Wp, g.C)[:, b:b + g.H, b:b + g.W]
            grad_input = grad_input.permute(0, 3, 1, 2).contiguous()
        grad_weight = g.weight_from_matrix(grad_wm) if need_w else None
        return grad_input, grad_offset, grad_mask, grad_weight, grad_bias, None, None, None


def _check_args(input, offset, weight, bias, mask, stride, padding, dilation):
    if input.dim() != 4 or offset.dim() != 4 or weight.dim() != 4:
        raise ValueError("input, offset and weight must be 4-D")
    N, C, H, W = input.shape
    O, Cw, kh, kw = weight.shape
    if Cw == 0 or C % Cw != 0:
        raise ValueError(f"input channels {C} not divisible by weight.shape[1] = {Cw}")
    if O % (C // Cw) != 0:
        raise ValueError(f"out channels {O} not divisible by the {C // Cw} weight groups")
    K = kh * kw
    if offset.shape[1] == 0 or offset.shape[1] % (2 * K) != 0:
        raise ValueError(f"offset has {offset.shape[1]} channels, expected a multiple of {2 * K}")
    G = offset.shape[1] // (2 * K)
    if C % G != 0:
        raise ValueError(f"input channels {C} not divisible by the {G} offset groups")
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if offset.shape[0] != N or tuple(offset.shape[-2:]) != (Ho, Wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} does not match the output "
                         f"({N}, {Ho}, {Wo})")
    if mask is not None and tuple(mask.shape) != (N, G * K, Ho, Wo):
        raise ValueError(f"mask shape {tuple(mask.shape)}, expected {(N, G * K, Ho, Wo)}")
    if bias is not None and tuple(bias.shape) != (O,):
        raise ValueError(f"bias shape {tuple(bias.shape)}, expected ({O},)")


def deform_conv2d_fast(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = (1, 1),
    padding: IntPair = (0, 0),
    dilation: IntPair = (1, 1),
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Modulated deformable convolution, numerically equal to ``torchvision.ops.deform_conv2d``.

    Args:
        input: (N, C, H, W).
        offset: (N, 2 * G * kh * kw, Ho, Wo), ``G`` offset groups; per group and kernel tap
            ``i * kw + j`` the channels ``[y, x]`` (torchvision's layout).
        weight: (O, C / Gw, kh, kw), ``Gw`` weight groups.
        bias: (O,) or None.
        stride, padding, dilation: int or (h, w) pairs.
        mask: (N, G * kh * kw, Ho, Wo) modulation, or None for all ones.

    Returns:
        (N, O, Ho, Wo), contiguous, of ``input``'s dtype. Differentiable in input, offset, mask,
        weight and bias (first order only).

    Under autocast it computes in float32, as torchvision's op does (the sampling weights and
    the gathered rows must share one dtype).
    """
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    _check_args(input, offset, weight, bias, mask, stride, padding, dilation)
    if torch.is_autocast_enabled(input.device.type):
        with torch.autocast(input.device.type, enabled=False):
            args = [t.float() if t is not None else None
                    for t in (input, offset, mask, weight, bias)]
            out = _DeformConv2dFn.apply(*args, stride, padding, dilation)
        return out.to(input.dtype)
    return _DeformConv2dFn.apply(input, offset, mask, weight, bias, stride, padding, dilation)


def deform_conv2d_auto(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = (1, 1),
    padding: IntPair = (0, 0),
    dilation: IntPair = (1, 1),
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``deform_conv2d_fast`` for CPU tensors when enabled, ``torchvision.ops.deform_conv2d``
    otherwise (CUDA keeps torchvision's kernel, and so does a graph traced for export). Same
    arguments and shapes as both."""
    if input.device.type == "cpu" and _fast_enabled and not capturing_graph():
        return deform_conv2d_fast(input, offset, weight, bias, stride, padding, dilation, mask)
    return _tv_deform_conv2d(input, offset, weight, bias, stride=stride, padding=padding,
                             dilation=dilation, mask=mask)
