"""Keypoint heatmaps: offset refinement, encode/decode round trip, losses, and the head."""
import pytest
import torch
import torch.nn.functional as F

from multitask import get_cfg
from multitask.modeling.roi_heads import (
    OffsetRefinedKeypointHead,
    build_keypoint_head,
    encode_gaussian_targets,
    encode_onehot_targets,
    heatmaps_to_keypoints,
    keypoint_gaussian_ce_loss,
    keypoint_gaussian_mse_loss,
    keypoint_softmax_ce_loss,
    keypoints_to_heatmap_coords,
    refine_heatmaps,
)
from multitask.modeling.roi_heads.keypoint_head import upsample_bilinear

pytestmark = pytest.mark.usefixtures("one_thread")


# x[i, j] = 10 * i + j
MAP_5X5 = [
    [0.0, 1.0, 2.0, 3.0, 4.0],
    [10.0, 11.0, 12.0, 13.0, 14.0],
    [20.0, 21.0, 22.0, 23.0, 24.0],
    [30.0, 31.0, 32.0, 33.0, 34.0],
    [40.0, 41.0, 42.0, 43.0, 44.0],
]


def _map(r=1, k=1):
    return torch.tensor(MAP_5X5).expand(r, k, 5, 5).contiguous()


def _const_offsets(dx, dy, r=1, k=1, h=5, w=5):
    off = torch.zeros(r, 2 * k, h, w)
    off[:, 0::2] = dx
    off[:, 1::2] = dy
    return off


# ---------------------------------------------------------------------------------------------
# refine_heatmaps
# ---------------------------------------------------------------------------------------------
def test_refine_zero_offsets_is_identity():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 7, 6)
    y = refine_heatmaps(x, torch.zeros(3, 8, 7, 6))
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, rtol=0, atol=1e-6)


def test_refine_shift_x_by_one_cell():
    y = refine_heatmaps(_map(), _const_offsets(1.0, 0.0))
    expected = torch.tensor(
        [
            [1.0, 2.0, 3.0, 4.0, 0.0],
            [11.0, 12.0, 13.0, 14.0, 0.0],
            [21.0, 22.0, 23.0, 24.0, 0.0],
            [31.0, 32.0, 33.0, 34.0, 0.0],
            [41.0, 42.0, 43.0, 44.0, 0.0],
        ]
    )
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-5)


def test_refine_shift_x_by_minus_one_cell():
    y = refine_heatmaps(_map(), _const_offsets(-1.0, 0.0))
    expected = torch.tensor(
        [
            [0.0, 0.0, 1.0, 2.0, 3.0],
            [0.0, 10.0, 11.0, 12.0, 13.0],
            [0.0, 20.0, 21.0, 22.0, 23.0],
            [0.0, 30.0, 31.0, 32.0, 33.0],
            [0.0, 40.0, 41.0, 42.0, 43.0],
        ]
    )
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-5)


def test_refine_shift_y_by_one_cell():
    y = refine_heatmaps(_map(), _const_offsets(0.0, 1.0))
    expected = torch.tensor(
        [
            [10.0, 11.0, 12.0, 13.0, 14.0],
            [20.0, 21.0, 22.0, 23.0, 24.0],
            [30.0, 31.0, 32.0, 33.0, 34.0],
            [40.0, 41.0, 42.0, 43.0, 44.0],
            [0.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-5)


def test_refine_half_cell_averages_neighbours():
    y = refine_heatmaps(_map(), _const_offsets(0.5, 0.0))
    # (x[i, j] + x[i, j + 1]) / 2; the last column averages with the zero outside the map
    expected = torch.tensor(
        [
            [0.5, 1.5, 2.5, 3.5, 2.0],
            [10.5, 11.5, 12.5, 13.5, 7.0],
            [20.5, 21.5, 22.5, 23.5, 12.0],
            [30.5, 31.5, 32.5, 33.5, 17.0],
            [40.5, 41.5, 42.5, 43.5, 22.0],
        ]
    )
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-5)

    y = refine_heatmaps(_map(), _const_offsets(0.0, 0.5))
    expected = torch.tensor(
        [
            [5.0, 6.0, 7.0, 8.0, 9.0],
            [15.0, 16.0, 17.0, 18.0, 19.0],
            [25.0, 26.0, 27.0, 28.0, 29.0],
            [35.0, 36.0, 37.0, 38.0, 39.0],
            [20.0, 20.5, 21.0, 21.5, 22.0],
        ]
    )
    torch.testing.assert_close(y[0, 0], expected, rtol=0, atol=1e-5)


def test_refine_diagonal_half_cell_is_bilinear():
    y = refine_heatmaps(_map(), _const_offsets(0.5, 0.5))
    # mean of the 2x2 neighbourhood: x[i, j] + 5.5 inside
    assert y[0, 0, 0, 0].item() == pytest.approx(5.5, abs=1e-5)
    assert y[0, 0, 2, 1].item() == pytest.approx(26.5, abs=1e-5)
    # bottom-right corner: one of four samples is inside -> 44 / 4
    assert y[0, 0, 4, 4].item() == pytest.approx(11.0, abs=1e-5)


def test_refine_offsets_are_per_keypoint_and_per_pixel():
    x = _map(r=2, k=2)
    off = torch.zeros(2, 4, 5, 5)
    off[0, 0] = 1.0  # roi 0, keypoint 0: dx = 1
    off[0, 3] = 1.0  # roi 0, keypoint 1: dy = 1
    off[1, 0, 2, 3] = -2.0  # roi 1, keypoint 0, one pixel only: dx = -2
    y = refine_heatmaps(x, off)
    torch.testing.assert_close(y[0, 0, :, :4], x[0, 0, :, 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(y[0, 1, :4], x[0, 1, 1:], rtol=0, atol=1e-5)
    expected = x[1, 0].clone()
    expected[2, 3] = 21.0  # x[2, 3 - 2]
    torch.testing.assert_close(y[1, 0], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(y[1, 1], x[1, 1], rtol=0, atol=1e-5)


def test_refine_empty_and_gradients():
    assert refine_heatmaps(torch.zeros(0, 17, 8, 8), torch.zeros(0, 34, 8, 8)).shape == (
        0, 17, 8, 8,
    )
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    off = (torch.rand(2, 6, 6, 6) - 0.5).requires_grad_(True)
    refine_heatmaps(x, off).pow(2).sum().backward()
    for t in (x, off):
        assert torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# encoding / decoding
# ---------------------------------------------------------------------------------------------
def test_keypoints_to_heatmap_coords_golden():
    rois = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    kps = torch.tensor(
        [[[30.0, 25.0, 2.0],  # u = 20 * 4 / 40 = 2.0, v = 0.5
          [30.0, 25.0, 0.0],  # unlabelled
          [50.0, 30.0, 1.0],  # on the right edge: outside [x0, x1)
          [9.0, 30.0, 2.0],  # left of the box
          [10.0, 59.0, 1.0]]]  # u = 0, v = 3.9
    )
    uv, valid = keypoints_to_heatmap_coords(kps, rois, 4)
    torch.testing.assert_close(uv[0, 0], torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(uv[0, 4], torch.tensor([0.0, 3.9]))
    assert valid.tolist() == [[True, False, False, False, True]]
    idx = encode_onehot_targets(uv, valid, 4)
    assert idx.tolist() == [[0 * 4 + 2, -1, -1, -1, 3 * 4 + 0]]


def test_heatmaps_to_keypoints_golden():
    rois = torch.tensor([[10.0, 20.0, 50.0, 60.0]])  # 40 x 40 box, S = 4: 10 px per cell
    hm = torch.zeros(1, 2, 4, 4)
    hm[0, 0, 1, 2] = 5.0  # peak at row 1, column 2
    hm[0, 0, 1, 3] = 1.0  # right neighbour larger than the left one: + a quarter cell in x
    hm[0, 1, 3, 0] = 2.0  # corner peak: no sub-cell shift
    kp = heatmaps_to_keypoints(hm, rois)
    assert kp.shape == (1, 2, 3)
    torch.testing.assert_close(kp[0, 0], torch.tensor([10.0 + 2.75 * 10, 20.0 + 1.5 * 10, 5.0]))
    torch.testing.assert_close(kp[0, 1], torch.tensor([10.0 + 0.5 * 10, 20.0 + 3.5 * 10, 2.0]))
    assert heatmaps_to_keypoints(torch.zeros(0, 17, 4, 4), torch.zeros(0, 4)).shape == (0, 17, 3)


def _random_keypoints_in_boxes(r, k, seed):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(r, generator=g) * 200
    y0 = torch.rand(r, generator=g) * 200
    w = 8 + torch.rand(r, generator=g) * 300
    h = 8 + torch.rand(r, generator=g) * 300
    rois = torch.stack([x0, y0, x0 + w, y0 + h], dim=1)
    fx = torch.rand(r, k, generator=g) * 0.999
    fy = torch.rand(r, k, generator=g) * 0.999
    kps = torch.stack(
        [x0[:, None] + fx * w[:, None], y0[:, None] + fy * h[:, None], torch.full((r, k), 2.0)],
        dim=2,
    )
    return kps, rois


@pytest.mark.parametrize("size", [56, 13])
@pytest.mark.parametrize("encoding", ["onehot", "gaussian"])
def test_encode_decode_round_trip_within_half_cell(size, encoding):
    r, k = 12, 17
    kps, rois = _random_keypoints_in_boxes(r, k, seed=size)
    uv, valid = keypoints_to_heatmap_coords(kps, rois, size)
    assert valid.all()
    if encoding == "onehot":
        idx = encode_onehot_targets(uv, valid, size)
        assert (idx >= 0).all() and (idx < size * size).all()
        maps = torch.zeros(r, k, size * size).scatter_(2, idx.unsqueeze(2), 1.0)
        maps = maps.view(r, k, size, size)
    else:
        maps = encode_gaussian_targets(uv, valid, size, sigma=1.0)
        assert maps.shape == (r, k, size, size)
        assert maps.max() <= 1.0 + 1e-6
        # the peak is in the cell that contains the keypoint
        peak = maps.flatten(2).argmax(2)
        torch.testing.assert_close(peak, encode_onehot_targets(uv, valid, size), rtol=0, atol=0)
    decoded = heatmaps_to_keypoints(maps, rois)
    bw = (rois[:, 2] - rois[:, 0])[:, None]
    bh = (rois[:, 3] - rois[:, 1])[:, None]
    err_x = (decoded[..., 0] - kps[..., 0]).abs()
    err_y = (decoded[..., 1] - kps[..., 1]).abs()
    assert (err_x <= 0.5 * bw / size + 1e-3).all(), (err_x / (bw / size)).max()
    assert (err_y <= 0.5 * bh / size + 1e-3).all(), (err_y / (bh / size)).max()


def test_gaussian_targets_zero_for_invalid_and_sigma():
    uv = torch.tensor([[[2.5, 2.5], [1.0, 1.0]]])
    valid = torch.tensor([[True, False]])
    maps = encode_gaussian_targets(uv, valid, 5, sigma=1.0)
    assert maps[0, 1].abs().sum() == 0
    assert maps[0, 0, 2, 2].item() == pytest.approx(1.0)
    assert maps[0, 0, 2, 3].item() == pytest.approx(float(torch.exp(torch.tensor(-0.5))))
    wide = encode_gaussian_targets(uv, valid, 5, sigma=2.0)
    assert wide[0, 0, 2, 3].item() == pytest.approx(float(torch.exp(torch.tensor(-0.125))))


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------
def test_softmax_ce_loss_zero_graph_without_valid_keypoints():
    hm = torch.randn(3, 17, 8, 8, requires_grad=True)
    loss = keypoint_softmax_ce_loss(hm, torch.full((3, 17), -1, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()
    assert hm.grad is not None and hm.grad.abs().sum() == 0
    empty = torch.zeros(0, 17, 8, 8, requires_grad=True)
    loss = keypoint_softmax_ce_loss(empty, torch.zeros(0, 17, dtype=torch.long))
    assert loss.item() == 0.0
    loss.backward()


@pytest.mark.parametrize("loss_fn", [keypoint_gaussian_ce_loss, keypoint_gaussian_mse_loss])
def test_gaussian_losses_zero_graph_without_valid_keypoints(loss_fn):
    hm = torch.randn(3, 17, 8, 8, requires_grad=True)
    target = torch.rand(3, 17, 8, 8)
    loss = loss_fn(hm, target, torch.zeros(3, 17, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert hm.grad is not None and hm.grad.abs().sum() == 0


def test_softmax_ce_loss_lower_for_peaked_map():
    s, k = 8, 3
    targets = torch.tensor([[5, -1, 63], [0, 17, -1]])
    flat = torch.zeros(2, k, s, s)
    peaked = torch.zeros(2, k, s * s)
    for r in range(2):
        for j in range(k):
            if targets[r, j] >= 0:
                peaked[r, j, targets[r, j]] = 10.0
    peaked = peaked.view(2, k, s, s)
    flat_loss = keypoint_softmax_ce_loss(flat, targets)
    peaked_loss = keypoint_softmax_ce_loss(peaked, targets)
    assert flat_loss.item() == pytest.approx(float(torch.log(torch.tensor(64.0))), rel=1e-5)
    assert peaked_loss.item() < 1e-2 < flat_loss.item()
    # peaked at the wrong cell is worse than flat
    wrong = torch.roll(peaked, shifts=1, dims=-1)
    assert keypoint_softmax_ce_loss(wrong, targets) > flat_loss


def test_gaussian_ce_loss_matches_softmax_ce_for_narrow_target_and_ranks_by_distance():
    s = 8
    uv = torch.tensor([[[3.5, 4.5], [1.5, 0.5], [6.5, 6.5]]])  # cell centres
    valid = torch.tensor([[True, True, False]])
    logits = torch.randn(1, 3, s, s)
    narrow = encode_gaussian_targets(uv, valid, s, sigma=0.05)  # numerically one-hot
    onehot = encode_onehot_targets(uv, valid, s)
    assert keypoint_gaussian_ce_loss(logits, narrow, valid).item() == pytest.approx(
        keypoint_softmax_ce_loss(logits, onehot).item(), rel=1e-5
    )
    # with sigma = 1 cell a peak one cell away costs less than one four cells away
    target = encode_gaussian_targets(uv[:, :1], valid[:, :1], s, sigma=1.0)

    def peak_at(i, j):
        m = torch.zeros(1, 1, s, s)
        m[0, 0, i, j] = 8.0
        return keypoint_gaussian_ce_loss(m, target, valid[:, :1]).item()

    right, near, far = peak_at(4, 3), peak_at(4, 4), peak_at(0, 3)
    assert right < near < far


def test_gaussian_mse_loss_lower_for_peaked_map():
    uv = torch.tensor([[[3.2, 4.7], [1.1, 0.4]]])
    valid = torch.tensor([[True, True]])
    target = encode_gaussian_targets(uv, valid, 8)
    flat = torch.full_like(target, 0.1)
    assert keypoint_gaussian_mse_loss(target, target, valid).item() == pytest.approx(0.0)
    peaked = target * 0.9
    assert (
        keypoint_gaussian_mse_loss(peaked, target, valid)
        < keypoint_gaussian_mse_loss(flat, target, valid)
    )
    # invalid keypoints do not contribute
    valid2 = torch.tensor([[True, False]])
    garbage = target.clone()
    garbage[0, 1] = 5.0
    assert keypoint_gaussian_mse_loss(garbage, target, valid2).item() == pytest.approx(0.0)


# ---------------------------------------------------------------------------------------------
# the head
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("deform_on", [False, True])
def test_keypoint_head_shapes_and_zero_initial_offsets(deform_on):
    torch.manual_seed(0)
    head = OffsetRefinedKeypointHead(8, num_keypoints=5, conv_dims=(8, 8), deform_on=deform_on)
    x = torch.randn(3, 8, 7, 7)
    out = head(x)
    assert out["heatmaps"].shape == (3, 5, 28, 28)
    assert out["raw_heatmaps"].shape == (3, 5, 28, 28)
    assert out["offsets"].shape == (3, 10, 28, 28)
    assert out["offsets"].abs().max() == 0  # training starts from the plain heatmap
    torch.testing.assert_close(out["heatmaps"], out["raw_heatmaps"], rtol=1e-5, atol=1e-5)
    out["heatmaps"].sum().backward()
    g = head.predictor.kps_score_lowres.weight.grad
    assert torch.isfinite(g).all() and g[:, 5:].abs().sum() > 0


def test_keypoint_head_from_config():
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [8],
            "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION", 7,
            "MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE", 28,
            "MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT", False,
        ]
    )
    head = build_keypoint_head(cfg, 4)
    out = head(torch.randn(2, 4, 7, 7))
    assert set(out) == {"heatmaps"}
    assert out["heatmaps"].shape == (2, 17, 28, 28)
    assert head.predictor.kps_score_lowres.out_channels == 17


def test_gaussian_mse_head_starts_near_zero():
    """With Gaussian targets in [0, 1] the first MSE must be of the order of the targets' energy
    (about pi * sigma^2 per keypoint), not of the logit scale softmax-CE heads start at."""
    from multitask.modeling.roi_heads import build_keypoint_head

    torch.manual_seed(0)
    cfg = get_cfg()
    cfg.merge_from_list(["MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "[16]"])
    x = torch.rand(3, 8, 14, 14)
    rois = torch.tensor([[0.0, 0.0, 56.0, 56.0]] * 3)
    kps = torch.rand(3, 17, 3) * 50
    kps[..., 2] = 2
    uv, valid = keypoints_to_heatmap_coords(kps, rois, 56)
    target = encode_gaussian_targets(uv, valid, 56, 1.0)
    losses = {}
    for loss_type in ("gaussian_mse", "softmax_ce"):
        cfg.MODEL.ROI_KEYPOINT_HEAD.LOSS_TYPE = loss_type
        heatmaps = build_keypoint_head(cfg, 8)(x)["heatmaps"]
        losses[loss_type] = float(keypoint_gaussian_mse_loss(heatmaps.detach(), target, valid))
    assert losses["gaussian_mse"] < 10.0
    assert losses["softmax_ce"] > 10 * losses["gaussian_mse"]


@pytest.mark.parametrize("shape,scale", [((3, 51, 28, 28), 2), ((2, 5, 7, 9), 4)])
def test_channels_last_upsample_is_interpolate(shape, scale):
    """The keypoint head's CPU upsampling gives F.interpolate's values and input gradient."""
    x = torch.randn(shape, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = F.interpolate(a, scale_factor=scale, mode="bilinear", align_corners=False)
    out = upsample_bilinear(b, scale)
    grad = torch.linspace(-1, 1, ref.numel(), dtype=ref.dtype).view_as(ref)
    ref.backward(grad)
    out.backward(grad)
    assert out.is_contiguous() and b.grad.is_contiguous()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(b.grad, a.grad)


# ---------------------------------------------------------------------------------------------
# torchvision's / detectron2's decoder and the score semantics
# ---------------------------------------------------------------------------------------------
def _random_heatmaps_and_boxes(seed=0, r=5, k=17, s=56):
    g = torch.Generator().manual_seed(seed)
    heatmaps = 5 * torch.randn(r, k, s, s, generator=g)
    xy = 200 * torch.rand(r, 2, generator=g)
    wh = torch.tensor([[0.4, 0.4]]) + 150 * torch.rand(r, 2, generator=g)  # some below 1 px
    return heatmaps, torch.cat([xy, xy + wh], 1)


def test_bicubic_decoder_equals_torchvision():
    """Peer test: torchvision's Keypoint R-CNN decoding, coordinates and scores."""
    from torchvision.models.detection.roi_heads import heatmaps_to_keypoints as tv_decode

    from multitask.modeling.roi_heads import heatmaps_to_keypoints_bicubic

    heatmaps, boxes = _random_heatmaps_and_boxes()
    ours = heatmaps_to_keypoints_bicubic(heatmaps, boxes)
    tv_xy, tv_scores = tv_decode(heatmaps, boxes)
    torch.testing.assert_close(ours[..., :2], tv_xy[..., :2], rtol=0, atol=1e-4)
    torch.testing.assert_close(ours[..., 2], tv_scores, rtol=1e-6, atol=1e-5)
    assert heatmaps_to_keypoints_bicubic(heatmaps[:0], boxes[:0]).shape == (0, 17, 3)


@pytest.mark.parametrize("decoder", ["subcell", "bicubic"])
def test_prob_score_is_a_softmax_probability(decoder):
    """``SCORE "prob"``: same locations as "logit", higher for peakier maps; for "subcell" the
    softmax over the map at the peak, for "bicubic" detectron2's exp(peak) / sum(exp(S x S map))
    with the peak read from the resized map (it can exceed 1 where bicubic overshoots)."""
    from multitask.modeling.roi_heads import decode_keypoints

    heatmaps, boxes = _random_heatmaps_and_boxes(1)
    logit = decode_keypoints(heatmaps, boxes, decoder, "logit")
    prob = decode_keypoints(heatmaps, boxes, decoder, "prob")
    assert torch.equal(logit[..., :2], prob[..., :2])
    assert (prob[..., 2] > 0).all()
    if decoder == "subcell":
        peaky = decode_keypoints(heatmaps * 3, boxes, decoder, "prob")
        assert (peaky[..., 2] > prob[..., 2]).all()
        soft = heatmaps.flatten(2).softmax(-1).max(-1).values
        torch.testing.assert_close(prob[..., 2], soft)
    else:
        expected = torch.exp(logit[..., 2] - heatmaps.flatten(2).logsumexp(-1))
        torch.testing.assert_close(prob[..., 2], expected)
    with pytest.raises(ValueError, match="DECODER"):
        decode_keypoints(heatmaps, boxes, "nearest")
    with pytest.raises(ValueError, match="score"):
        decode_keypoints(heatmaps, boxes, decoder, "logits")
