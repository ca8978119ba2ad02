"""Pretrained weights in, the right model out.

torchvision's Keypoint R-CNN and Mask R-CNN (random weights and BatchNorm statistics, the COCO_V1
layout: FrozenBatchNorm2d with eps 0) are saved to a file, loaded through our config and
``MODEL.WEIGHTS``, and run on a real coco-mini image at network size: boxes, scores, keypoints
and masks must equal torchvision's, with our fast CPU kernels on and off. Also: ImageNet ResNets
in the other colour order, checkpoints in the previous parameter names, the load report and its
refusals, weights from a URL, and the full multi-task model starting from a Keypoint R-CNN file.
"""

import functools
import http.server
import logging
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torchvision
from shared_data import COCO_MINI_VAL_IMAGES
from torchvision.models.detection import KeypointRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from multitask import build_model, get_cfg
from multitask.engine.checkpoint import LEGACY_KEY_PREFIXES, MultiTaskCheckpointer
from multitask.modeling.layers.roi_align_fast import (
    fast_cpu_roi_align_enabled,
    set_fast_cpu_roi_align,
)

REPO = Path(__file__).resolve().parents[1]
KP_CONFIG = REPO / "configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_torchvision.yaml"
MASK_CONFIG = REPO / "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_torchvision.yaml"
FINETUNE_CONFIG = (REPO / "configs/COCO-MultiTask/"
                   "multitask_R_50_FPN_dconv_c3-c5_dconv_head_from_torchvision_kprcnn.yaml")
H, W = 224, 320  # network size: torchvision's transform resizes by exactly 1
N_DET = 6

needs_image = pytest.mark.skipif(not Path(COCO_MINI_VAL_IMAGES).is_dir(),
                                 reason="coco-mini not found")


pytestmark = pytest.mark.usefixtures("two_threads")


@pytest.fixture(params=[True, False], ids=["fast_kernels", "torchvision_kernels"])
def fast_kernels(request):
    old = fast_cpu_roi_align_enabled()
    set_fast_cpu_roi_align(request.param)
    yield request.param
    set_fast_cpu_roi_align(old)


def _randomize_frozen_bn(model: torch.nn.Module, seed: int, eps: float = 0.0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.weight.numel()
            # variances log-uniform in [1e-3, 1] (real COCO weights have channels of tiny
            # variance, where eps -- 0 here, 1e-5 in detectron2 -- matters) and weights of the
            # same scale, so that activations neither vanish nor explode
            var = 10 ** (-3 * torch.rand(n, generator=g))
            m.running_var.copy_(var)
            m.weight.copy_(var.sqrt() * (0.5 + torch.rand(n, generator=g)))
            m.bias.copy_(0.1 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            m.eps = eps


@functools.lru_cache(maxsize=None)
def _tv_model(kind: str, seed: int = 0):
    """A torchvision R-CNN in the COCO_V1 layout with random weights, eval mode."""
    torch.manual_seed(seed)
    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None,
                                   norm_layer=FrozenBatchNorm2d, trainable_layers=3)
    common = dict(min_size=min(H, W), max_size=max(H, W), box_detections_per_img=N_DET)
    if kind == "keypoint":
        model = KeypointRCNN(backbone, num_classes=2, **common)
    else:
        model = MaskRCNN(backbone, num_classes=91, **common)
    with torch.no_grad():
        _randomize_frozen_bn(model, seed)
    model.eval()
    _calibrate(model)
    return model


# output std each predictor is scaled to: random weights give logits in the hundreds, i.e. no
# proposals of any use and box scores of 0 or 1; these give spread scores and sane boxes
_TARGET_STD = {
    "rpn.head.cls_logits": 2.0,
    "rpn.head.bbox_pred": 0.2,
    "roi_heads.box_predictor.cls_score": 2.0,
    "roi_heads.box_predictor.bbox_pred": 0.2,
}


def _calibrate(model) -> None:
    """Rescale the random predictors so that their outputs have :data:`_TARGET_STD` on the test
    image (the boxes depend on the RPN, so twice)."""
    modules = dict(model.named_modules())
    for _ in range(2):
        seen = {}
        hooks = [modules[name].register_forward_hook(
            lambda m, i, o, name=name: seen.setdefault(name, []).append(o.detach().flatten()))
            for name in _TARGET_STD]
        _tv_run(model, _image())
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for name, target in _TARGET_STD.items():
                std = torch.cat(seen[name]).std().item()
                modules[name].weight.mul_(target / std)
                modules[name].bias.mul_(target / std)


def _save(model, path: Path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def _image():
    name = sorted(Path(COCO_MINI_VAL_IMAGES).glob("*.jpg"))[0]
    bgr = cv2.resize(cv2.imread(str(name)), (W, H), interpolation=cv2.INTER_AREA)
    return bgr


def _tv_run(model, bgr):
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1)
    with torch.no_grad():
        return model([rgb.float() / 255.0])[0]


def _our_run(config: Path, weights: str, bgr, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights,
                         "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", N_DET] + list(overrides))
    model = build_model(cfg).eval()
    ckpt = MultiTaskCheckpointer(model)
    ckpt.load(weights, checkpointables=[])
    image = torch.from_numpy(np.ascontiguousarray(bgr)).permute(2, 0, 1)
    with torch.no_grad():
        out = model([{"image": image, "height": H, "width": W}])[0]["instances"]
    return out, ckpt.last_report, model


def _assert_same_detections(ours, tv):
    assert len(ours) == len(tv["boxes"]) == N_DET
    torch.testing.assert_close(ours.pred_boxes, tv["boxes"], rtol=0, atol=1e-2)
    torch.testing.assert_close(ours.scores, tv["scores"], rtol=0, atol=1e-4)
    assert torch.equal(ours.pred_classes, tv["labels"] - 1)


def _both_exactly_loaded(kind: str, config: Path, tmp_path: Path):
    """torchvision's outputs and ours from the same file, after a load that filled everything."""
    tv = _tv_model(kind)
    bgr = _image()
    ref = _tv_run(tv, bgr)
    ours, report, _ = _our_run(config, _save(tv, tmp_path / f"{kind}.pth"), bgr)
    assert sum(r["missing"] + r["unexpected"] + r["shape"] for r in report) == 0, report
    _assert_same_detections(ours, ref)
    return ours, ref


@needs_image
def test_torchvision_keypointrcnn_exact(tmp_path, fast_kernels):
    ours, ref = _both_exactly_loaded("keypoint", KP_CONFIG, tmp_path)
    torch.testing.assert_close(ours.pred_keypoints[..., :2], ref["keypoints"][..., :2],
                               rtol=0, atol=1e-2)
    torch.testing.assert_close(ours.pred_keypoints[..., 2], ref["keypoints_scores"],
                               rtol=1e-4, atol=1e-4)


@needs_image
def test_torchvision_maskrcnn_exact(tmp_path, fast_kernels):
    ours, ref = _both_exactly_loaded("mask", MASK_CONFIG, tmp_path)
    tv_masks = ref["masks"][:, 0] > 0.5
    assert ours.pred_masks.shape == tv_masks.shape
    differ = (ours.pred_masks != tv_masks).sum().item()
    assert differ <= 1e-4 * tv_masks.numel(), f"{differ} mask pixels differ"
    assert tv_masks.sum() > 0


@needs_image
def test_eps_and_colour_order_matter(tmp_path):
    """The test above can fail: with detectron2's BN eps, or without the colour conversion, the
    same file gives other outputs."""
    tv = _tv_model("keypoint")
    bgr = _image()
    ref = _tv_run(tv, bgr)
    path = _save(tv, tmp_path / "kprcnn.pth")
    eps, _, _ = _our_run(KP_CONFIG, path, bgr, "MODEL.RESNETS.FROZEN_BN_EPS", 1e-5)
    rgb, _, _ = _our_run(KP_CONFIG, path, bgr[:, :, ::-1].copy())  # wrong colour order in
    for out in (eps, rgb):
        assert len(out) != N_DET or (out.pred_boxes - ref["boxes"]).abs().max() > 1e-2 or (
            (out.scores - ref["scores"]).abs().max() > 1e-4)


# ---- the full multi-task model from a Keypoint R-CNN file ---------------------------------------
@needs_image
def test_multitask_model_starts_from_keypointrcnn(tmp_path, caplog):
    """RB+H with a torchvision Keypoint R-CNN file: at iteration 0 its boxes and keypoints are
    torchvision's (deformable convs at zero offsets, heatmap offsets at zero); the mask head is
    named as starting fresh."""
    tv = _tv_model("keypoint")
    bgr = _image()
    ref = _tv_run(tv, bgr)
    with caplog.at_level(logging.INFO, logger="multitask.engine.checkpoint"):
        ours, report, model = _our_run(FINETUNE_CONFIG, _save(tv, tmp_path / "kprcnn.pth"), bgr)
    _assert_same_detections(ours, ref)
    torch.testing.assert_close(ours.pred_keypoints[..., :2], ref["keypoints"][..., :2],
                               rtol=0, atol=1e-2)
    rows = {r["module"]: r for r in report}
    assert rows["roi_heads.mask_head"]["loaded"] == 0 and rows["roi_heads.mask_head"]["missing"]
    # only the deformable convs' offset branches are missing from backbone and keypoint head
    for module in ("backbone.bottom_up", "roi_heads.keypoint_head"):
        missing = [k for k in model.state_dict() if k.startswith(module)
                   and rows[module]["missing"] and "conv_offset" not in k
                   and not k.endswith("num_batches_tracked")]
        assert rows[module]["missing"] == sum(
            1 for k in model.state_dict() if k.startswith(module) and "conv_offset" in k)
        assert missing  # the rest was loaded
    assert sum(r["unexpected"] + r["shape"] for r in report) == 0
    text = caplog.text
    assert "mask head (roi_heads.mask_head, roi_heads.mask_predictor)" in text
    assert "offset channels stay at zero" in text
    assert "reversed the input channels" in text


@needs_image
def test_finetune_config_trains_from_keypointrcnn_file(tmp_path):
    """A few iterations of the shipped fine-tuning config from a Keypoint R-CNN file."""
    import subprocess
    import sys

    path = _save(_tv_model("keypoint"), tmp_path / "kprcnn.pth")
    out = tmp_path / "out"
    cmd = [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file",
           str(FINETUNE_CONFIG), "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", path,
           "DATASETS.TRAIN", "('coco_mini_train',)", "DATASETS.TEST", "()",
           "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "2", "SOLVER.STEPS", "(1,)",
           "SOLVER.WARMUP_ITERS", "1", "SOLVER.BASE_LR", "0.001", "SOLVER.CHECKPOINT_PERIOD",
           "100", "SOLVER.LOG_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0",
           "INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192",
           "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "50",
           "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
           "OUTPUT_DIR", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "torchvision R-CNN" in log and "mask head" in log
    assert (out / "model_final.pth").is_file()
    assert "iter: 2/2" in log


# ---- ImageNet ResNets, colour order, old names, refusals, URLs ---------------------------------
def _tiny_cfg(*overrides):
    from tiny_model import TINY_MODEL

    cfg = get_cfg()
    cfg.merge_from_list(list(TINY_MODEL) + list(overrides))
    return cfg


def test_imagenet_resnet_in_bgr_model_gives_torchvision_features(tmp_path, caplog):
    """torchvision's RGB ResNet-18 loaded into our BGR model: the same picture gives the same
    features (<= 1e-4) as torchvision's model on the RGB picture."""
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(weights=None)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
    tv.eval()
    path = _save(tv, tmp_path / "resnet18.pth")
    model = build_model(_tiny_cfg())
    with caplog.at_level(logging.INFO, logger="multitask.engine.checkpoint"):
        MultiTaskCheckpointer(model).load(path)
    assert "reversed the input channels" in caplog.text
    assert "fills the backbone only, by design" in caplog.text

    rgb = torch.rand(1, 3, 96, 128, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    bgr255 = rgb.flip(1) * 255
    ours_in = (bgr255 - model.pixel_mean) / model.pixel_std
    with torch.no_grad():
        feats = model.backbone.bottom_up(ours_in)
        x = (rgb - mean) / std
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for name, layer in zip(("res2", "res3", "res4", "res5"),
                               (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            x = layer(x)
            torch.testing.assert_close(feats[name], x, rtol=1e-4, atol=1e-4, msg=name)


def test_our_checkpoint_in_the_other_colour_order(tmp_path):
    bgr_model = build_model(_tiny_cfg())
    MultiTaskCheckpointer(bgr_model, str(tmp_path)).save("bgr")
    rgb_model = build_model(_tiny_cfg("INPUT.FORMAT", "RGB"))
    MultiTaskCheckpointer(rgb_model).load(str(tmp_path / "bgr.pth"))
    w_bgr = bgr_model.backbone.bottom_up.conv1.weight
    w_rgb = rgb_model.backbone.bottom_up.conv1.weight
    assert torch.equal(w_rgb, w_bgr.flip(1)) and not torch.equal(w_rgb, w_bgr)


def test_checkpoint_in_previous_names_loads(tmp_path):
    """A state dict in the names of the ROI heads before they took torchvision's (mask_convs,
    mask_predictor_, keypoint_head_.convs / .score_lowres) loads completely."""
    cfg = _tiny_cfg("MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True],
                    "MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON", True)
    torch.manual_seed(0)
    src = build_model(cfg)
    old = {}
    for k, v in src.state_dict().items():
        for old_prefix, new_prefix in LEGACY_KEY_PREFIXES:
            if k.startswith(new_prefix):
                k = old_prefix + k[len(new_prefix):]
                break
        old[k] = v
    assert any(k.startswith("roi_heads.keypoint_head_.score_lowres.") for k in old)
    assert any(k.startswith("roi_heads.mask_convs.") for k in old)
    # as a DistributedDataParallel model's state dict would be saved
    old = {"module." + k: v for k, v in old.items()}
    torch.save({"model": old, "iteration": 3}, tmp_path / "old.pth")
    torch.manual_seed(1)
    dst = build_model(cfg)
    ckpt = MultiTaskCheckpointer(dst)
    ckpt.load(str(tmp_path / "old.pth"))
    assert sum(r["missing"] + r["unexpected"] + r["shape"] for r in ckpt.last_report) == 0
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_weights_that_do_not_fit_the_backbone_are_refused(tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    model = build_model(_tiny_cfg("MODEL.RESNETS.DEPTH", 50))
    msg = r"r18\.pth.*fills \d+ of the \d+ backbone.*conv1\.weight"
    with pytest.raises(RuntimeError, match=msg):
        MultiTaskCheckpointer(model).load(str(tmp_path / "r18.pth"))


def test_coco_91_class_predictors_keep_person_rows(tmp_path, caplog):
    """torchvision's 91-class Mask R-CNN into a person-only model: background and person rows of
    the box classifier, their boxes and mask channels are kept; nothing is left unloaded."""
    tv = _tv_model("mask")
    model = build_model(_tiny_cfg(*[x for kv in [
        ("MODEL.RESNETS.DEPTH", 50), ("MODEL.FPN.OUT_CHANNELS", 256),
        ("MODEL.ROI_BOX_HEAD.FC_DIM", 1024), ("MODEL.ROI_MASK_HEAD.CONV_DIM", 256),
        ("MODEL.ROI_MASK_HEAD.NUM_CONV", 4), ("MODEL.KEYPOINT_ON", False)] for x in kv]))
    with caplog.at_level(logging.INFO, logger="multitask.engine.checkpoint"):
        ckpt = MultiTaskCheckpointer(model)
        ckpt.load(_save(tv, tmp_path / "maskrcnn.pth"))
    assert "kept the background and COCO's person" in caplog.text
    sd = tv.state_dict()
    heads = model.roi_heads
    assert torch.equal(heads.box_predictor.cls_score.weight,
                       sd["roi_heads.box_predictor.cls_score.weight"][:2])
    assert torch.equal(heads.box_predictor.bbox_pred.bias,
                       sd["roi_heads.box_predictor.bbox_pred.bias"][:8])
    assert torch.equal(heads.mask_predictor.mask_fcn_logits.weight,
                       sd["roi_heads.mask_predictor.mask_fcn_logits.weight"][:2])
    assert sum(r["missing"] + r["unexpected"] + r["shape"] for r in ckpt.last_report) == 0


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_weights_from_a_url_are_downloaded_once(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), served / "resnet18-test.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    handler = functools.partial(_Quiet, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/resnet18-test.pth"
    try:
        model = build_model(_tiny_cfg())
        MultiTaskCheckpointer(model).load(url)
    finally:
        server.shutdown()
        server.server_close()
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / "resnet18-test.pth"
    assert cached.is_file()
    w = tv.layer2[0].conv1.weight
    assert torch.equal(model.backbone.bottom_up.layer2[0].conv1.weight, w)
    # the server is gone: the second load reads the cache
    other = build_model(_tiny_cfg())
    MultiTaskCheckpointer(other).load(url)
    assert torch.equal(other.backbone.bottom_up.layer2[0].conv1.weight, w)
    with pytest.raises(RuntimeError, match="cannot download.*missing.pth"):
        MultiTaskCheckpointer(other).load(url.replace("resnet18-test", "missing"))
