"""End-to-end: a tiny MultiTaskRCNN trains, infers and rescales on hand-made images (CPU)."""
import pytest
import torch
from tiny_model import TINY_MODEL

from multitask import Instances, build_model, get_cfg

H, W = 96, 128  # input size, divisible by 32
K = 17
LOSS_NAMES = {
    "loss_objectness",
    "loss_rpn_box_reg",
    "loss_classifier",
    "loss_box_reg",
    "loss_mask",
    "loss_keypoint",
}

TINY = TINY_MODEL + ["MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", 8]
# the full model: deformable res3-res5 and deformable keypoint head, offset refinement on
FULL = [
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True],
    "MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON", True,
    "MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT", True,
]


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_list(TINY + [x for o in overrides for x in o])
    return cfg


def _build(*overrides, seed=0):
    torch.manual_seed(seed)
    return build_model(_cfg(*overrides))


def _image(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)


PEOPLE_BOXES = [(10.0, 8.0, 52.0, 88.0), (64.0, 20.0, 116.0, 92.0)]


def _people(seed=0, visibility=None):
    """Two people: boxes, elliptic masks, keypoints inside the boxes (some unlabelled)."""
    g = torch.Generator().manual_seed(seed)
    n = len(PEOPLE_BOXES)
    boxes = torch.tensor(PEOPLE_BOXES)
    masks = torch.zeros(n, H, W, dtype=torch.uint8)
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
    kps = torch.zeros(n, K, 3)
    for i, (x0, y0, x1, y1) in enumerate(PEOPLE_BOXES):
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        masks[i] = (((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1).to(torch.uint8)
        kps[i, :, 0] = x0 + 2 + torch.rand(K, generator=g) * (x1 - x0 - 4)
        kps[i, :, 1] = y0 + 2 + torch.rand(K, generator=g) * (y1 - y0 - 4)
        kps[i, :, 2] = torch.randint(0, 3, (K,), generator=g).float()
        kps[i, :4, 2] = 2.0
    if visibility is not None:
        kps[..., 2] = float(visibility)
    return Instances(
        (H, W),
        gt_boxes=boxes,
        gt_classes=torch.zeros(n, dtype=torch.int64),
        gt_masks=masks,
        gt_keypoints=kps,
    )


def _nobody():
    return Instances(
        (H, W),
        gt_boxes=torch.zeros(0, 4),
        gt_classes=torch.zeros(0, dtype=torch.int64),
        gt_masks=torch.zeros(0, H, W, dtype=torch.uint8),
        gt_keypoints=torch.zeros(0, K, 3),
    )


def _batch(visibility=None):
    return [
        {"image": _image(1), "instances": _people(visibility=visibility), "height": H, "width": W},
        {"image": _image(2), "instances": _nobody(), "height": H, "width": W},
    ]


def _assert_finite_losses(losses, names):
    assert set(losses) == set(names)
    for k, v in losses.items():
        assert v.dim() == 0, k
        assert torch.isfinite(v), (k, v)


def _grad_is_useful(p):
    return p.grad is not None and bool(torch.isfinite(p.grad).all()) and p.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def test_train_step_full_model():
    model = _build(FULL)
    model.train()
    torch.manual_seed(0)
    losses = model(_batch())
    _assert_finite_losses(losses, LOSS_NAMES)
    assert losses["loss_keypoint"] > 0 and losses["loss_mask"] > 0
    sum(losses.values()).backward()

    bottom_up = model.backbone.bottom_up
    offset_convs = {
        n: m.conv_offset for n, m in bottom_up.named_modules() if hasattr(m, "conv_offset")
    }
    # res3..res5 of ResNet-18: 2 blocks each
    assert sorted(offset_convs) == sorted(
        f"layer{s}.{b}.conv2" for s in (2, 3, 4) for b in (0, 1)
    )
    for name, conv in offset_convs.items():
        assert _grad_is_useful(conv.weight), name

    head = model.roi_heads.keypoint_head
    head_offset_convs = [m.conv_offset for m in head if hasattr(m, "conv_offset")]
    assert len(head_offset_convs) == 2
    for conv in head_offset_convs:
        assert _grad_is_useful(conv.weight)
    # ConvTranspose2d: (in, out, kh, kw); out = K heatmaps + 2K
    w = model.roi_heads.keypoint_predictor.kps_score_lowres.weight
    assert w.shape[1] == 3 * K
    assert w.grad is not None and torch.isfinite(w.grad).all()
    assert w.grad[:, K:].abs().sum() > 0, "no gradient reaches the offset channels"
    assert w.grad[:, :K].abs().sum() > 0

    # FREEZE_AT 2: stem and res2 get no gradient
    for p in list(bottom_up.conv1.parameters()) + list(bottom_up.layer1.parameters()):
        assert not p.requires_grad and p.grad is None
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("loss_type", ["softmax_ce", "gaussian_ce", "gaussian_mse"])
def test_train_all_keypoints_invisible(loss_type):
    model = _build(FULL, ["MODEL.ROI_KEYPOINT_HEAD.LOSS_TYPE", loss_type])
    model.train()
    torch.manual_seed(0)
    losses = model(_batch(visibility=0))
    _assert_finite_losses(losses, LOSS_NAMES)
    assert losses["loss_keypoint"].item() == 0.0
    assert losses["loss_mask"] > 0
    sum(losses.values()).backward()
    # with visible keypoints the same loss is positive
    torch.manual_seed(0)
    losses = model(_batch())
    _assert_finite_losses(losses, LOSS_NAMES)
    assert losses["loss_keypoint"] > 0
    losses["loss_keypoint"].backward()
    assert _grad_is_useful(model.roi_heads.keypoint_predictor.kps_score_lowres.weight)


def test_head_norms_build_and_train():
    model = _build(
        FULL,
        [
            "MODEL.ROI_KEYPOINT_HEAD.NORM", "GN", "MODEL.ROI_MASK_HEAD.NORM", "GN",
            "MODEL.FPN.NORM", "GN", "MODEL.ROI_BOX_HEAD.NORM", "GN",
            "MODEL.ROI_BOX_HEAD.NUM_CONV", "2", "MODEL.ROI_BOX_HEAD.CONV_DIM", "16",
            "MODEL.ROI_BOX_HEAD.NUM_FC", "1",
        ],
    )
    heads = model.roi_heads

    def first_conv(module):
        return next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))

    fpn = model.backbone.fpn
    for convs, conv in (
        # the keypoint head's first conv is deformable, not an nn.Conv2d
        (heads.keypoint_head, heads.keypoint_head[0]),
        (heads.mask_head, first_conv(heads.mask_head)),
        (heads.box_head, first_conv(heads.box_head)),
        (fpn.inner_blocks, first_conv(fpn.inner_blocks)),
        (fpn.layer_blocks, first_conv(fpn.layer_blocks)),
    ):
        assert any(isinstance(m, torch.nn.GroupNorm) for m in convs.modules())
        assert conv.bias is None  # a conv followed by a norm has no bias
    # 2 convs of 16 channels on the 7x7 pooled features, then one fc of FC_DIM
    box_convs = [m for m in heads.box_head.modules() if isinstance(m, torch.nn.Conv2d)]
    box_fcs = [m for m in heads.box_head.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in box_convs] == [16, 16]
    fc_dim = 64  # the tiny model's FC_DIM
    assert [(f.in_features, f.out_features) for f in box_fcs] == [(16 * 7 * 7, fc_dim)]
    model.train()
    torch.manual_seed(0)
    losses = model(_batch())
    _assert_finite_losses(losses, LOSS_NAMES)
    sum(losses.values()).backward()
    assert _grad_is_useful(heads.keypoint_head[1].weight)  # the first GroupNorm
    box_gn = next(m for m in heads.box_head.modules() if isinstance(m, torch.nn.GroupNorm))
    assert _grad_is_useful(box_gn.weight)
    assert _grad_is_useful(fpn.layer_blocks[0][1].weight)  # the GroupNorm after the p2 conv


def test_default_box_head_keeps_its_parameter_names():
    # checkpoints of the 2fc head name its layers fc6 / fc7 (torchvision's TwoMLPHead)
    names = {n for n, _ in _build().roi_heads.box_head.named_parameters()}
    assert names == {"fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"}


@pytest.mark.parametrize("opts", [["MODEL.ROI_BOX_HEAD.NUM_FC", "0"],
                                  ["MODEL.ROI_BOX_HEAD.NUM_CONV", "-1"]])
def test_bad_box_head_sizes_refused_by_name(opts):
    with pytest.raises(ValueError, match="MODEL.ROI_BOX_HEAD"):
        _build(opts)


@pytest.mark.parametrize("canonical, levels", [(224, [2, 2, 3]), (56, [3, 4, 5])])
def test_canonical_box_size_picks_fpn_levels(canonical, levels):
    model = _build(["MODEL.ROI_HEADS.CANONICAL_BOX_SIZE", str(canonical)])
    model.eval()
    with torch.no_grad():
        model([{"image": _image(0)}])  # the poolers infer their scales on the first call
    boxes = torch.tensor([[0.0, 0.0, 40.0, 40.0], [0.0, 0.0, 60.0, 60.0], [0.0, 0.0, 120.0, 120.0]])
    heads = model.roi_heads
    for pooler in (heads.box_roi_pool, heads.mask_roi_pool, heads.keypoint_roi_pool):
        assert (pooler.map_levels([boxes]) + 2).tolist() == levels  # p2 is level index 0


@pytest.mark.parametrize(
    "key",
    [
        "MODEL.ROI_KEYPOINT_HEAD.NORM",
        "MODEL.ROI_MASK_HEAD.NORM",
        "MODEL.ROI_BOX_HEAD.NORM",
        "MODEL.FPN.NORM",
    ],
)
def test_unknown_head_norm_refused_by_name(key):
    with pytest.raises(ValueError, match=key):
        _build(FULL, [key, "SyncGN"])


def test_train_batch_without_people():
    model = _build()
    model.train()
    torch.manual_seed(0)
    batch = _batch()
    losses = model([batch[1], batch[1]])
    _assert_finite_losses(losses, LOSS_NAMES)
    for k in ("loss_rpn_box_reg", "loss_box_reg", "loss_mask", "loss_keypoint"):
        assert losses[k].item() == 0.0, k
    assert losses["loss_objectness"] > 0 and losses["loss_classifier"] > 0
    sum(losses.values()).backward()


@pytest.mark.parametrize("off", ["MODEL.MASK_ON", "MODEL.KEYPOINT_ON"])
def test_task_switches(off):
    model = _build([off, False])
    roi = model.roi_heads
    assert roi.has_mask() == (off != "MODEL.MASK_ON")
    assert roi.has_keypoint() == (off != "MODEL.KEYPOINT_ON")
    missing = "loss_mask" if off == "MODEL.MASK_ON" else "loss_keypoint"
    model.train()
    torch.manual_seed(0)
    batch = _batch()
    losses = model(batch)
    _assert_finite_losses(losses, LOSS_NAMES - {missing})
    sum(losses.values()).backward()

    model.eval()
    with torch.no_grad():
        out = model([{"image": batch[0]["image"]}])
    inst = out[0]["instances"]
    assert len(inst) > 0
    assert inst.has("pred_boxes") and inst.has("scores") and inst.has("pred_classes")
    assert inst.has("pred_masks") == (off != "MODEL.MASK_ON")
    assert inst.has("pred_keypoints") == (off != "MODEL.KEYPOINT_ON")


def test_few_sgd_steps_reduce_loss():
    """Overfitting sanity on one image (random weights: small lr and clipping keep it stable)."""
    model = _build(seed=3)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=3e-3, momentum=0.9)
    inputs = [_batch()[0]]
    history = []
    torch.manual_seed(0)
    for _ in range(8):
        losses = model(inputs)
        total = sum(losses.values())
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        history.append(total.item())
    assert sum(history[-2:]) / 2 < 0.9 * history[0], history
    assert history[-1] < history[0], history


# ---------------------------------------------------------------------------------------------
# inference
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_model():
    model = _build(FULL)
    model.eval()
    return model


def test_inference_rescales_to_requested_size(eval_model):
    images = [_image(1), _image(2)]
    inputs = [{"image": im, "height": 2 * H, "width": 2 * W} for im in images]
    with torch.no_grad():
        outputs = eval_model(inputs)
    assert len(outputs) == 2
    for out in outputs:
        inst = out["instances"]
        assert isinstance(inst, Instances)
        assert inst.image_size == (2 * H, 2 * W)
        r = len(inst)
        assert 0 < r <= 8
        boxes = inst.pred_boxes
        assert boxes.shape == (r, 4) and torch.isfinite(boxes).all()
        assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 2 * W).all()
        assert (boxes[:, 1::2] >= 0).all() and (boxes[:, 1::2] <= 2 * H).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        assert inst.scores.shape == (r,)
        assert (inst.scores[:-1] >= inst.scores[1:]).all()
        assert inst.pred_classes.dtype == torch.int64 and (inst.pred_classes == 0).all()
        assert inst.pred_masks.shape == (r, 2 * H, 2 * W)
        assert inst.pred_masks.dtype == torch.bool
        kp = inst.pred_keypoints
        assert kp.shape == (r, K, 3) and torch.isfinite(kp).all()
        # decoded keypoints lie in their (rescaled) boxes
        eps = 1e-3
        assert (kp[..., 0] >= boxes[:, None, 0] - eps).all()
        assert (kp[..., 0] <= boxes[:, None, 2] + eps).all()
        assert (kp[..., 1] >= boxes[:, None, 1] - eps).all()
        assert (kp[..., 1] <= boxes[:, None, 3] + eps).all()


def test_inference_defaults_to_input_size_and_is_deterministic(eval_model):
    with torch.no_grad():
        a = eval_model([{"image": _image(1)}])[0]["instances"]
        b = eval_model([{"image": _image(1), "height": H, "width": W}])[0]["instances"]
    assert a.image_size == (H, W)
    assert a.pred_masks.shape[1:] == (H, W)
    torch.testing.assert_close(a.pred_boxes, b.pred_boxes)
    torch.testing.assert_close(a.pred_keypoints, b.pred_keypoints)


def test_inference_with_detected_instances(eval_model):
    boxes = torch.tensor(
        [[5.0, 6.0, 40.0, 70.0], [50.0, 10.0, 120.0, 90.0], [0.0, 0.0, 128.0, 96.0]]
    )
    given = [Instances((H, W), pred_boxes=boxes.clone())]
    inputs = [{"image": _image(1), "height": 2 * H, "width": 2 * W}]
    with torch.no_grad():
        out = eval_model.inference(inputs, detected_instances=given)
    inst = out[0]["instances"]
    assert inst.image_size == (2 * H, 2 * W)
    assert len(inst) == 3
    torch.testing.assert_close(inst.pred_boxes, boxes * 2, rtol=0, atol=1e-5)
    torch.testing.assert_close(given[0].pred_boxes, boxes, rtol=0, atol=0)  # input untouched
    torch.testing.assert_close(inst.scores, torch.ones(3))
    assert (inst.pred_classes == 0).all()
    assert inst.pred_masks.shape == (3, 2 * H, 2 * W) and inst.pred_masks.dtype == torch.bool
    kp = inst.pred_keypoints
    assert kp.shape == (3, K, 3)
    assert (kp[..., 0] >= 2 * boxes[:, None, 0] - 1e-3).all()
    assert (kp[..., 0] <= 2 * boxes[:, None, 2] + 1e-3).all()
    assert (kp[..., 1] >= 2 * boxes[:, None, 1] - 1e-3).all()
    assert (kp[..., 1] <= 2 * boxes[:, None, 3] + 1e-3).all()
    # given scores are kept
    given = [Instances((H, W), pred_boxes=boxes[:2], scores=torch.tensor([0.9, 0.3]))]
    with torch.no_grad():
        out = eval_model.inference(inputs, detected_instances=given)
    torch.testing.assert_close(out[0]["instances"].scores, torch.tensor([0.9, 0.3]))


def test_inference_without_detections():
    model = _build(["MODEL.ROI_HEADS.SCORE_THRESH_TEST", 1.01])
    model.eval()
    with torch.no_grad():
        out = model([{"image": _image(1), "height": 2 * H, "width": 2 * W}])
    inst = out[0]["instances"]
    assert len(inst) == 0
    assert inst.pred_boxes.shape == (0, 4)
    assert inst.pred_masks.shape == (0, 2 * H, 2 * W) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_keypoints.shape == (0, K, 3)


def test_unknown_postprocessor_refused_by_name():
    with pytest.raises(KeyError) as excinfo:
        _build(["MODEL.POSTPROCESSORS", ["PoseResidualNetwrk"]])
    assert "PoseResidualNetwrk" in str(excinfo.value)
