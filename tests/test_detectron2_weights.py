"""detectron2 model-zoo ``.pkl`` weights: safe reading, renaming, and equivalence of each part.

detectron2 cannot be installed here, so its R-50-FPN Keypoint / Mask R-CNN are described twice,
independently of our model: by a generator of its parameter names and shapes written from its
modules (``modeling/backbone/resnet.py``, ``fpn.py``, ``proposal_generator/rpn.py``,
``roi_heads/box_head.py``, ``fast_rcnn.py``, ``keypoint_head.py``, ``mask_head.py``), checked
against a hand-written sample of real names; and by functional forwards of its layers that run on
the detectron2-named arrays directly. Our model built from the ``*_detectron2.yaml`` configs must
take the converted file with ``strict=True`` and compute what those forwards compute.
"""

import collections
import os
import pickle
import re
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection.anchor_utils import AnchorGenerator

from multitask import build_model, get_cfg
from multitask.engine.detectron2_weights import (
    Detectron2WeightsError,
    UnsafePickleError,
    detectron2_name_to_multitask,
    detectron2_to_multitask,
    load_detectron2_pkl,
    read_detectron2_pkl,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
KEYPOINT_CFG = REPO_ROOT / "configs/COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x_detectron2.yaml"
MASK_CFG = REPO_ROOT / "configs/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x_detectron2.yaml"

# Real detectron2 names and shapes (keypoint_rcnn_R_50_FPN_3x, model_final_a6e10b.pkl), written
# out by hand from detectron2's modules: the generator below must produce exactly these.
D2_KEYPOINT_SAMPLE = {
    "backbone.bottom_up.stem.conv1.weight": (64, 3, 7, 7),
    "backbone.bottom_up.stem.conv1.norm.running_mean": (64,),
    "backbone.bottom_up.res2.0.shortcut.weight": (256, 64, 1, 1),
    "backbone.bottom_up.res2.0.shortcut.norm.running_var": (256,),
    "backbone.bottom_up.res2.2.conv3.norm.weight": (256,),
    "backbone.bottom_up.res3.0.conv1.weight": (128, 256, 1, 1),
    "backbone.bottom_up.res4.5.conv3.norm.bias": (1024,),
    "backbone.bottom_up.res5.0.shortcut.weight": (2048, 1024, 1, 1),
    "backbone.bottom_up.res5.2.conv2.weight": (512, 512, 3, 3),
    "backbone.fpn_lateral2.weight": (256, 256, 1, 1),
    "backbone.fpn_lateral5.weight": (256, 2048, 1, 1),
    "backbone.fpn_output4.bias": (256,),
    "proposal_generator.rpn_head.conv.weight": (256, 256, 3, 3),
    "proposal_generator.rpn_head.objectness_logits.weight": (3, 256, 1, 1),
    "proposal_generator.rpn_head.anchor_deltas.weight": (12, 256, 1, 1),
    "roi_heads.box_head.fc1.weight": (1024, 12544),
    "roi_heads.box_head.fc2.bias": (1024,),
    "roi_heads.box_predictor.cls_score.weight": (2, 1024),
    "roi_heads.box_predictor.bbox_pred.weight": (4, 1024),
    "roi_heads.keypoint_head.conv_fcn1.weight": (512, 256, 3, 3),
    "roi_heads.keypoint_head.conv_fcn8.weight": (512, 512, 3, 3),
    "roi_heads.keypoint_head.score_lowres.weight": (512, 17, 4, 4),
    "roi_heads.keypoint_head.score_lowres.bias": (17,),
}
# ... and of mask_rcnn_R_50_FPN_3x (model_final_f10217.pkl, COCO's 80 classes)
D2_MASK80_SAMPLE = {
    "roi_heads.box_predictor.cls_score.weight": (81, 1024),
    "roi_heads.box_predictor.bbox_pred.weight": (320, 1024),
    "roi_heads.mask_head.mask_fcn1.weight": (256, 256, 3, 3),
    "roi_heads.mask_head.mask_fcn4.bias": (256,),
    "roi_heads.mask_head.deconv.weight": (256, 256, 2, 2),
    "roi_heads.mask_head.predictor.weight": (80, 256, 1, 1),
    "roi_heads.mask_head.predictor.bias": (80,),
}


pytestmark = pytest.mark.usefixtures("two_threads")


# ---------------------------------------------------------------------------------------------
# detectron2's R-50-FPN, from its modules
# ---------------------------------------------------------------------------------------------
def d2_r50_fpn_shapes(
    num_classes: int, keypoints: bool, masks: bool
) -> "collections.OrderedDict[str, Tuple[int, ...]]":
    """detectron2's parameter names and shapes for an R-50-FPN R-CNN (FrozenBN, 2fc box head,
    class-specific boxes/masks, 8x512 keypoint head, 4x256 mask head), plus its pixel buffers."""
    s = collections.OrderedDict()

    def conv_norm(prefix, cout, cin, k):
        s[prefix + ".weight"] = (cout, cin, k, k)
        for b in ("weight", "bias", "running_mean", "running_var"):
            s[f"{prefix}.norm.{b}"] = (cout,)

    def conv_bias(prefix, cout, cin, k):
        s[prefix + ".weight"] = (cout, cin, k, k)
        s[prefix + ".bias"] = (cout,)

    s["pixel_mean"] = (3, 1, 1)
    s["pixel_std"] = (3, 1, 1)
    conv_norm("backbone.bottom_up.stem.conv1", 64, 3, 7)
    cin = 64
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        width, cout = 64 * 2 ** (stage - 2), 256 * 2 ** (stage - 2)
        for i in range(blocks):
            p = f"backbone.bottom_up.res{stage}.{i}"
            if i == 0:
                conv_norm(p + ".shortcut", cout, cin, 1)
            conv_norm(p + ".conv1", width, cin, 1)
            conv_norm(p + ".conv2", width, width, 3)
            conv_norm(p + ".conv3", cout, width, 1)
            cin = cout
    for stage in (2, 3, 4, 5):
        conv_bias(f"backbone.fpn_lateral{stage}", 256, 256 * 2 ** (stage - 2), 1)
        conv_bias(f"backbone.fpn_output{stage}", 256, 256, 3)
    conv_bias("proposal_generator.rpn_head.conv", 256, 256, 3)
    conv_bias("proposal_generator.rpn_head.objectness_logits", 3, 256, 1)
    conv_bias("proposal_generator.rpn_head.anchor_deltas", 3 * 4, 256, 1)
    for name, (cout, cin) in (("fc1", (1024, 256 * 7 * 7)), ("fc2", (1024, 1024))):
        s[f"roi_heads.box_head.{name}.weight"] = (cout, cin)
        s[f"roi_heads.box_head.{name}.bias"] = (cout,)
    s["roi_heads.box_predictor.cls_score.weight"] = (num_classes + 1, 1024)
    s["roi_heads.box_predictor.cls_score.bias"] = (num_classes + 1,)
    s["roi_heads.box_predictor.bbox_pred.weight"] = (4 * num_classes, 1024)
    s["roi_heads.box_predictor.bbox_pred.bias"] = (4 * num_classes,)
    if masks:
        for n in range(1, 5):
            conv_bias(f"roi_heads.mask_head.mask_fcn{n}", 256, 256, 3)
        s["roi_heads.mask_head.deconv.weight"] = (256, 256, 2, 2)  # ConvTranspose2d: (in, out)
        s["roi_heads.mask_head.deconv.bias"] = (256,)
        conv_bias("roi_heads.mask_head.predictor", num_classes, 256, 1)
    if keypoints:
        cin = 256
        for n in range(1, 9):
            conv_bias(f"roi_heads.keypoint_head.conv_fcn{n}", 512, cin, 3)
            cin = 512
        s["roi_heads.keypoint_head.score_lowres.weight"] = (512, 17, 4, 4)  # (in, out, k, k)
        s["roi_heads.keypoint_head.score_lowres.bias"] = (17,)
    return s


def d2_random_arrays(shapes, seed: int) -> Dict[str, np.ndarray]:
    """float32 arrays of these shapes, scaled like trained weights (He-scaled convs, BN affine
    near 1, positive variances) so that a forward through 16 bottlenecks stays finite. Values
    are windows of one random pool at random offsets: cheap, and distinct between arrays."""
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal(1 << 22, dtype=np.float32)
    out = {}
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        start = int(rng.integers(0, pool.size - min(n, pool.size) + 1))
        a = pool[start: start + n] if n <= pool.size else np.resize(pool, n)
        a = a.reshape(shape)
        if name == "pixel_mean":
            a = np.array([103.53, 116.28, 123.675], np.float32).reshape(shape)
        elif name == "pixel_std":
            a = np.ones(shape, np.float32)
        elif name.endswith("running_var"):
            a = 0.5 + np.abs(a)
        elif ".norm." in name and name.endswith(".weight"):
            a = 0.5 + 0.25 * np.abs(a)
        elif name.endswith(("bias", "running_mean")):
            a = 0.1 * a
        else:  # conv / fc weight
            a = a * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))
        out[name] = np.ascontiguousarray(a, dtype=np.float32)
    return out


def write_d2_pkl(path: Path, arrays, protocol: int = 2) -> Path:
    data = {"model": arrays, "__author__": "Detectron2 Model Zoo", "matching_heuristics": True}
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)
    return path


# ---------------------------------------------------------------------------------------------
# our model
# ---------------------------------------------------------------------------------------------
def load_strict(model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Every key of the model filled, no key left over, nothing dropped on the way."""
    model.load_state_dict(state, strict=True)


def _own_state(model) -> Dict[str, torch.Tensor]:
    return dict(model.state_dict())


def _mask_logits(roi_heads, x):
    return roi_heads.mask_predictor(roi_heads.mask_head(x))


def _keypoint_logits(roi_heads, x):
    out = roi_heads.keypoint_predictor(roi_heads.keypoint_head(x))
    return out["heatmaps"] if isinstance(out, dict) else out


def _build(config: Path, *overrides):
    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *overrides])
    torch.manual_seed(0)
    return build_model(cfg).eval()


# ---------------------------------------------------------------------------------------------
# fixtures: a keypoint R-CNN file and a 1-class mask R-CNN file in detectron2's names and shapes.
# Written with pickle protocol 4: protocol 2 (which the small-file and refusal tests below use)
# stores bytes as latin1 text and took ~5 s for these 240 MB; the reader takes each array the
# same way under either.
# ---------------------------------------------------------------------------------------------
def _d2_file(tmp_path_factory, name: str, seed: int, keypoints: bool, masks: bool):
    arrays = d2_random_arrays(d2_r50_fpn_shapes(1, keypoints=keypoints, masks=masks), seed=seed)
    path = tmp_path_factory.mktemp("d2") / name
    return write_d2_pkl(path, arrays, protocol=4), arrays


@pytest.fixture(scope="module")
def keypoint_file(tmp_path_factory):
    return _d2_file(tmp_path_factory, "model_final_a6e10b.pkl", 1, keypoints=True, masks=False)


@pytest.fixture(scope="module")
def keypoint_loaded(keypoint_file):
    return load_detectron2_pkl(keypoint_file[0])


@pytest.fixture(scope="module")
def keypoint_model(keypoint_loaded):
    model = _build(KEYPOINT_CFG)
    load_strict(model, keypoint_loaded["model"])
    return model


def test_generated_names_are_detectron2s():
    kp = d2_r50_fpn_shapes(1, keypoints=True, masks=False)
    for name, shape in D2_KEYPOINT_SAMPLE.items():
        assert kp.get(name) == shape, name
    mask = d2_r50_fpn_shapes(80, keypoints=False, masks=True)
    for name, shape in D2_MASK80_SAMPLE.items():
        assert mask.get(name) == shape, name
    assert not any("keypoint" in k for k in mask) and not any("mask_head" in k for k in kp)


def test_name_map_samples():
    expected = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.bottom_up.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.bias": "backbone.bottom_up.bn1.bias",
        "backbone.bottom_up.res2.0.shortcut.norm.running_var":
            "backbone.bottom_up.layer1.0.downsample.1.running_var",
        "backbone.bottom_up.res3.0.shortcut.weight":
            "backbone.bottom_up.layer2.0.downsample.0.weight",
        "backbone.bottom_up.res4.5.conv3.norm.running_mean":
            "backbone.bottom_up.layer3.5.bn3.running_mean",
        "backbone.bottom_up.res5.2.conv2.weight": "backbone.bottom_up.layer4.2.conv2.weight",
        "backbone.fpn_lateral2.weight": "backbone.fpn.inner_blocks.0.0.weight",
        "backbone.fpn_lateral5.bias": "backbone.fpn.inner_blocks.3.0.bias",
        "backbone.fpn_output3.weight": "backbone.fpn.layer_blocks.1.0.weight",
        "proposal_generator.rpn_head.conv.weight": "proposal_generator.head.conv.0.0.weight",
        "proposal_generator.rpn_head.objectness_logits.bias":
            "proposal_generator.head.cls_logits.bias",
        "proposal_generator.rpn_head.anchor_deltas.weight":
            "proposal_generator.head.bbox_pred.weight",
        "roi_heads.box_head.fc1.weight": "roi_heads.box_head.fc6.weight",
        "roi_heads.box_head.fc2.bias": "roi_heads.box_head.fc7.bias",
        "roi_heads.keypoint_head.conv_fcn1.weight": "roi_heads.keypoint_head.0.weight",
        "roi_heads.keypoint_head.conv_fcn3.bias": "roi_heads.keypoint_head.4.bias",
        "roi_heads.keypoint_head.conv_fcn8.weight": "roi_heads.keypoint_head.14.weight",
        "roi_heads.keypoint_head.score_lowres.weight":
            "roi_heads.keypoint_predictor.kps_score_lowres.weight",
        "roi_heads.mask_head.mask_fcn1.weight": "roi_heads.mask_head.0.0.weight",
        "roi_heads.mask_head.mask_fcn4.bias": "roi_heads.mask_head.3.0.bias",
        "roi_heads.mask_head.deconv.weight": "roi_heads.mask_predictor.conv5_mask.weight",
        "roi_heads.mask_head.predictor.bias": "roi_heads.mask_predictor.mask_fcn_logits.bias",
    }
    for d2, ours in expected.items():
        assert detectron2_name_to_multitask(d2) == ours, d2
    for d2 in ("pixel_mean", "backbone.bottom_up.res6.0.conv1.weight",
               "roi_heads.box_head.conv1.weight", "roi_heads.keypoint_head.conv_fcn0.weight",
               "backbone.fpn_lateral2.norm.weight", "proposal_generator.rpn_head.conv.weightx"):
        assert detectron2_name_to_multitask(d2) is None, d2


# ---------------------------------------------------------------------------------------------
# whole files into our models
# ---------------------------------------------------------------------------------------------
def test_keypoint_file_fills_the_model_exactly(keypoint_file, keypoint_loaded, keypoint_model):
    path, arrays = keypoint_file
    assert keypoint_loaded["__author__"] == "Detectron2 Model Zoo"
    assert keypoint_loaded["unmapped"] == ["pixel_mean", "pixel_std"]
    sd = keypoint_loaded["model"]
    own = _own_state(keypoint_model)
    assert set(sd) == set(own)  # load_strict passed in the fixture; say it plainly too
    for k, v in sd.items():
        assert tuple(v.shape) == tuple(own[k].shape), k
    # every array landed somewhere, once
    assert len(sd) == len(arrays) - 2


def test_keypoint_values_land_where_they_should(keypoint_file, keypoint_model):
    _, d2 = keypoint_file
    own = _own_state(keypoint_model)

    def same(ours, theirs):
        torch.testing.assert_close(own[ours], torch.from_numpy(d2[theirs]), rtol=0, atol=0)

    same("backbone.bottom_up.layer2.0.downsample.1.running_var",
         "backbone.bottom_up.res3.0.shortcut.norm.running_var")
    same("backbone.bottom_up.layer4.2.conv1.weight", "backbone.bottom_up.res5.2.conv1.weight")
    same("backbone.fpn.inner_blocks.2.0.weight", "backbone.fpn_lateral4.weight")
    same("backbone.fpn.layer_blocks.3.0.bias", "backbone.fpn_output5.bias")
    same("proposal_generator.head.bbox_pred.weight",
         "proposal_generator.rpn_head.anchor_deltas.weight")
    same("roi_heads.keypoint_head.4.weight", "roi_heads.keypoint_head.conv_fcn3.weight")
    same("roi_heads.keypoint_head.14.bias", "roi_heads.keypoint_head.conv_fcn8.bias")
    same("roi_heads.keypoint_predictor.kps_score_lowres.weight",
         "roi_heads.keypoint_head.score_lowres.weight")
    # background: detectron2's LAST row is our row 0, its person row 0 our row 1
    w = own["roi_heads.box_predictor.cls_score.weight"]
    d2w = torch.from_numpy(d2["roi_heads.box_predictor.cls_score.weight"])
    assert torch.equal(w[0], d2w[1]) and torch.equal(w[1], d2w[0])
    b = own["roi_heads.box_predictor.cls_score.bias"]
    d2b = torch.from_numpy(d2["roi_heads.box_predictor.cls_score.bias"])
    assert torch.equal(b, d2b.flip(0))
    # boxes: 4 zero background rows, then detectron2's person box
    for suffix in ("weight", "bias"):
        box = own["roi_heads.box_predictor.bbox_pred." + suffix]
        d2box = torch.from_numpy(d2["roi_heads.box_predictor.bbox_pred." + suffix])
        assert box.shape[0] == 8
        assert torch.equal(box[:4], torch.zeros_like(box[:4]))
        assert torch.equal(box[4:], d2box)


@pytest.fixture(scope="module")
def mask_file(tmp_path_factory):
    return _d2_file(tmp_path_factory, "mask_rcnn_person.pkl", 2, keypoints=False, masks=True)


@pytest.fixture(scope="module")
def mask_model(mask_file):
    model = _build(MASK_CFG)
    loaded = load_detectron2_pkl(mask_file[0])
    assert loaded["unmapped"] == ["pixel_mean", "pixel_std"]
    load_strict(model, loaded["model"])
    return model


def test_mask_file_fills_the_model_and_gets_a_background_channel(mask_file, mask_model):
    _, d2 = mask_file
    own = _own_state(mask_model)
    w = own["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    b = own["roi_heads.mask_predictor.mask_fcn_logits.bias"]
    assert w.shape == (2, 256, 1, 1) and b.shape == (2,)
    assert torch.equal(w[0], torch.zeros_like(w[0])) and b[0] == 0
    assert torch.equal(w[1], torch.from_numpy(d2["roi_heads.mask_head.predictor.weight"][0]))
    assert torch.equal(own["roi_heads.mask_head.2.0.weight"],
                       torch.from_numpy(d2["roi_heads.mask_head.mask_fcn3.weight"]))
    assert torch.equal(own["roi_heads.mask_predictor.conv5_mask.weight"],
                       torch.from_numpy(d2["roi_heads.mask_head.deconv.weight"]))


def test_80_class_file_into_80_classes_or_person_only(mask_file, mask_model):
    """The zoo's 80-class Mask R-CNN: whole into NUM_CLASSES 80, person (detectron2 class 0)
    alone into NUM_CLASSES 1 with ``classes=[0]``."""
    shapes = d2_r50_fpn_shapes(80, keypoints=False, masks=True)
    d2 = d2_random_arrays(shapes, seed=3)
    sd, unmapped = detectron2_to_multitask(d2)
    assert unmapped == ["pixel_mean", "pixel_std"]
    assert sd["roi_heads.box_predictor.cls_score.weight"].shape == (81, 1024)
    assert sd["roi_heads.box_predictor.bbox_pred.weight"].shape == (324, 1024)
    assert sd["roi_heads.mask_predictor.mask_fcn_logits.weight"].shape == (81, 256, 1, 1)
    cls = torch.from_numpy(d2["roi_heads.box_predictor.cls_score.weight"])
    assert torch.equal(sd["roi_heads.box_predictor.cls_score.weight"][0], cls[80])
    assert torch.equal(sd["roi_heads.box_predictor.cls_score.weight"][1:], cls[:80])
    box = torch.from_numpy(d2["roi_heads.box_predictor.bbox_pred.weight"])
    assert torch.equal(sd["roi_heads.box_predictor.bbox_pred.weight"][4 + 4 * 17: 8 + 4 * 17],
                       box[4 * 17: 4 * 18])  # class 17 -> label 18
    load_strict(_build(MASK_CFG, "MODEL.ROI_HEADS.NUM_CLASSES", "80"), sd)

    person, _ = detectron2_to_multitask(d2, classes=[0])
    try:
        load_strict(mask_model, person)  # the NUM_CLASSES 1 model takes it whole
    finally:  # the other tests expect the mask file in the shared model
        load_strict(mask_model, load_detectron2_pkl(mask_file[0])["model"])
    assert torch.equal(person["roi_heads.box_predictor.cls_score.weight"], cls[[80, 0]])
    assert torch.equal(person["roi_heads.box_predictor.bbox_pred.weight"][4:], box[:4])
    masks = torch.from_numpy(d2["roi_heads.mask_head.predictor.weight"])
    assert torch.equal(person["roi_heads.mask_predictor.mask_fcn_logits.weight"][1], masks[0])
    with pytest.raises(Detectron2WeightsError, match="80 classes"):
        detectron2_to_multitask(d2, classes=[80])


def test_class_agnostic_predictors_are_repeated_per_class():
    rng = np.random.default_rng(0)
    d2 = {
        "roi_heads.box_predictor.cls_score.weight": rng.standard_normal((4, 8), np.float32),
        "roi_heads.box_predictor.bbox_pred.weight": rng.standard_normal((4, 8), np.float32),
        "roi_heads.box_predictor.bbox_pred.bias": rng.standard_normal(4, np.float32),
        "roi_heads.mask_head.predictor.weight": rng.standard_normal((1, 8, 1, 1), np.float32),
    }
    sd, _ = detectron2_to_multitask(d2)  # 3 classes, one box and one mask for all of them
    box = sd["roi_heads.box_predictor.bbox_pred.weight"]
    assert box.shape == (16, 8) and torch.equal(box[:4], torch.zeros(4, 8))
    for c in range(1, 4):
        assert torch.equal(box[4 * c: 4 * c + 4], torch.from_numpy(d2[
            "roi_heads.box_predictor.bbox_pred.weight"]))
    mask = sd["roi_heads.mask_predictor.mask_fcn_logits.weight"]
    assert mask.shape == (4, 8, 1, 1) and torch.equal(mask[0], torch.zeros(8, 1, 1))
    assert all(torch.equal(mask[c], mask[1]) for c in (2, 3))

    d2["roi_heads.box_predictor.bbox_pred.weight"] = np.zeros((8, 8), np.float32)
    with pytest.raises(Detectron2WeightsError, match="bbox_pred.weight' has 8 rows"):
        detectron2_to_multitask(d2)


def test_unmapped_names_are_reported(tmp_path):
    d2 = {
        "backbone.fpn_lateral2.weight": np.zeros((256, 256, 1, 1), np.float32),
        "backbone.fpn_lateral2.norm.weight": np.ones(256, np.float32),  # GN FPN: not here
        "proposal_generator.anchor_generator.cell_anchors.0": np.zeros((3, 4), np.float32),
        "roi_heads.box_head.conv1.weight": np.zeros((256, 256, 3, 3), np.float32),
        "pixel_std": np.ones((3, 1, 1), np.float32),
    }
    sd, unmapped = detectron2_to_multitask(d2)
    assert list(sd) == ["backbone.fpn.inner_blocks.0.0.weight"]
    assert unmapped == [k for k in d2 if k != "backbone.fpn_lateral2.weight"]
    path = write_d2_pkl(tmp_path / "partial.pkl", d2)
    assert load_detectron2_pkl(path)["unmapped"] == unmapped


# ---------------------------------------------------------------------------------------------
# equivalence: detectron2's layers, written functionally on its own arrays, against ours
# ---------------------------------------------------------------------------------------------
def _t(d2, name):
    return torch.from_numpy(d2[name])


def _d2_conv_norm(d2, x, prefix, stride=1, padding=0, relu=True):
    """detectron2's ``Conv2d(..., bias=False, norm=FrozenBatchNorm2d)`` (+ ReLU)."""
    x = F.conv2d(x, _t(d2, prefix + ".weight"), stride=stride, padding=padding)
    var = _t(d2, prefix + ".norm.running_var")
    scale = _t(d2, prefix + ".norm.weight") * (var + 1e-5).rsqrt()
    shift = _t(d2, prefix + ".norm.bias") - _t(d2, prefix + ".norm.running_mean") * scale
    x = x * scale[None, :, None, None] + shift[None, :, None, None]
    return F.relu(x) if relu else x


def _d2_conv(d2, x, prefix, padding=0):
    return F.conv2d(x, _t(d2, prefix + ".weight"), _t(d2, prefix + ".bias"), padding=padding)


def d2_resnet_fpn(d2, x):
    """detectron2's build_resnet_fpn_backbone forward (STRIDE_IN_1X1, FrozenBN, sum fusion,
    LastLevelMaxPool) -> [p2, p3, p4, p5, p6]."""
    x = _d2_conv_norm(d2, x, "backbone.bottom_up.stem.conv1", stride=2, padding=3)
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    c = {}
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for i in range(blocks):
            p = f"backbone.bottom_up.res{stage}.{i}"
            stride = 2 if i == 0 and stage > 2 else 1
            out = _d2_conv_norm(d2, x, p + ".conv1", stride=stride)  # stride in the 1x1
            out = _d2_conv_norm(d2, out, p + ".conv2", padding=1)
            out = _d2_conv_norm(d2, out, p + ".conv3", relu=False)
            short = x
            if i == 0:
                short = _d2_conv_norm(d2, x, p + ".shortcut", stride=stride, relu=False)
            x = F.relu(out + short)
        c[stage] = x
    prev = _d2_conv(d2, c[5], "backbone.fpn_lateral5")
    outs = [_d2_conv(d2, prev, "backbone.fpn_output5", padding=1)]
    for stage in (4, 3, 2):
        prev = _d2_conv(d2, c[stage], f"backbone.fpn_lateral{stage}") + F.interpolate(
            prev, scale_factor=2.0, mode="nearest"
        )
        outs.insert(0, _d2_conv(d2, prev, f"backbone.fpn_output{stage}", padding=1))
    outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2, padding=0))
    return outs


def _close(ours, ref):
    scale = float(ref.abs().max())
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


@torch.no_grad()
def test_backbone_and_rpn_head_compute_detectron2s_outputs(keypoint_file, keypoint_model):
    _, d2 = keypoint_file
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    ours = list(keypoint_model.backbone(x).values())
    ref = d2_resnet_fpn(d2, x)
    assert [tuple(o.shape) for o in ours] == [tuple(r.shape) for r in ref]
    for o, r in zip(ours, ref):
        _close(o, r)

    logits, deltas = keypoint_model.proposal_generator.head(ours)
    for p, lg, dl in zip(ref, logits, deltas):
        t = F.relu(_d2_conv(d2, p, "proposal_generator.rpn_head.conv", padding=1))
        _close(lg, _d2_conv(d2, t, "proposal_generator.rpn_head.objectness_logits"))
        _close(dl, _d2_conv(d2, t, "proposal_generator.rpn_head.anchor_deltas"))


def test_anchor_order_matches_detectron2():
    """Per location, detectron2's cell anchors for one size run over ASPECT_RATIOS (h/w) in
    order, as torchvision's; torchvision rounds their corners to integers, detectron2 does not."""
    sizes, ratios = (32, 64, 128, 256, 512), (0.5, 1.0, 2.0)
    gen = AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * len(sizes))
    for size, cell in zip(sizes, gen.cell_anchors):
        d2 = []
        for r in ratios:  # detectron2's DefaultAnchorGenerator.generate_cell_anchors
            w = (size * size / r) ** 0.5
            h = r * w
            d2.append([-w / 2, -h / 2, w / 2, h / 2])
        d2 = torch.tensor(d2)
        assert (cell - d2).abs().max() <= 0.5
        hw = (cell[:, 3] - cell[:, 1]) / (cell[:, 2] - cell[:, 0])
        assert torch.allclose(hw, torch.tensor(ratios), rtol=0.05)


@torch.no_grad()
def test_box_and_keypoint_heads_compute_detectron2s_outputs(keypoint_file, keypoint_model):
    _, d2 = keypoint_file
    g = torch.Generator().manual_seed(1)
    rh = keypoint_model.roi_heads

    x = torch.randn(3, 256, 7, 7, generator=g)
    scores, boxes = rh.box_predictor(rh.box_head(x))
    h = F.relu(F.linear(x.flatten(1), _t(d2, "roi_heads.box_head.fc1.weight"),
                        _t(d2, "roi_heads.box_head.fc1.bias")))
    h = F.relu(F.linear(h, _t(d2, "roi_heads.box_head.fc2.weight"),
                        _t(d2, "roi_heads.box_head.fc2.bias")))
    ref_scores = F.linear(h, _t(d2, "roi_heads.box_predictor.cls_score.weight"),
                          _t(d2, "roi_heads.box_predictor.cls_score.bias"))
    ref_boxes = F.linear(h, _t(d2, "roi_heads.box_predictor.bbox_pred.weight"),
                         _t(d2, "roi_heads.box_predictor.bbox_pred.bias"))
    # same class probabilities, background last there and first here
    _close(F.softmax(scores, 1), F.softmax(ref_scores, 1)[:, [1, 0]])
    _close(boxes[:, 4:], ref_boxes)
    assert torch.equal(boxes[:, :4], torch.zeros_like(boxes[:, :4]))

    x = torch.randn(2, 256, 14, 14, generator=g)
    ours = _keypoint_logits(rh, x)
    ref = x
    for n in range(1, 9):
        ref = F.relu(_d2_conv(d2, ref, f"roi_heads.keypoint_head.conv_fcn{n}", padding=1))
    ref = F.conv_transpose2d(ref, _t(d2, "roi_heads.keypoint_head.score_lowres.weight"),
                             _t(d2, "roi_heads.keypoint_head.score_lowres.bias"), stride=2,
                             padding=1)
    ref = F.interpolate(ref, scale_factor=2.0, mode="bilinear", align_corners=False)
    assert ours.shape == (2, 17, 56, 56)
    _close(ours, ref)


@torch.no_grad()
def test_mask_head_computes_detectron2s_outputs(mask_file, mask_model):
    _, d2 = mask_file
    x = torch.randn(2, 256, 14, 14, generator=torch.Generator().manual_seed(2))
    ours = _mask_logits(mask_model.roi_heads, x)
    ref = x
    for n in range(1, 5):
        ref = F.relu(_d2_conv(d2, ref, f"roi_heads.mask_head.mask_fcn{n}", padding=1))
    ref = F.relu(F.conv_transpose2d(ref, _t(d2, "roi_heads.mask_head.deconv.weight"),
                                    _t(d2, "roi_heads.mask_head.deconv.bias"), stride=2))
    ref = _d2_conv(d2, ref, "roi_heads.mask_head.predictor")
    assert ours.shape == (2, 2, 28, 28)
    _close(ours[:, 1:], ref)
    assert torch.equal(ours[:, 0], torch.zeros_like(ours[:, 0]))


# ---------------------------------------------------------------------------------------------
# reading: what is refused, and how
# ---------------------------------------------------------------------------------------------
class _RunsACommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _CustomWeights:
    def __init__(self):
        self.data = [1.0, 2.0]


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_reads_numpy_arrays_scalars_and_ordered_dicts(tmp_path, protocol):
    arrays = collections.OrderedDict(
        a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.array([1, 2], np.int64)
    )
    path = tmp_path / "small.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "x", "step": np.float32(3)}, f,
                    protocol=protocol)
    data = read_detectron2_pkl(path)
    assert list(data["model"]) == ["a", "b"] and data["step"] == 3
    np.testing.assert_array_equal(data["model"]["a"], arrays["a"])
    assert data["model"]["b"].dtype == np.int64


def _py2_pickle_of_one_array(values) -> bytes:
    """``cPickle.dumps({"model": {"w": np.float32 array}}, 2)`` as Python 2 writes it: names
    and the array data are Python 2 ``str`` (SHORT_BINSTRING), read back with latin1."""
    def py2_str(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    return (
        b"\x80\x02}q\x00" + py2_str(b"model") + b"}q\x01" + py2_str(b"w")
        + b"cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85"
        + py2_str(b"b") + b"\x87Rq\x04(K\x01K" + bytes([len(values)]) + b"\x85"
        + b"cnumpy\ndtype\nq\x05" + py2_str(b"f4") + b"K\x00K\x01\x87Rq\x06(K\x03"
        + py2_str(b"<") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89"
        + py2_str(np.asarray(values, "<f4").tobytes()) + b"tbss."
    )


def test_reads_python2_pickles(tmp_path):
    path = tmp_path / "py2.pkl"
    path.write_bytes(_py2_pickle_of_one_array([1.5, -2.0, 3.25]))
    w = read_detectron2_pkl(path)["model"]["w"]
    np.testing.assert_array_equal(w, np.array([1.5, -2.0, 3.25], np.float32))


def test_refuses_a_pickle_that_runs_a_command(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": _RunsACommand(f"echo pwned > {marker}")}}, f, protocol=2)
    name = f"{os.system.__module__}.system"  # posix.system here
    for reader in (read_detectron2_pkl, load_detectron2_pkl):
        with pytest.raises(UnsafePickleError, match=rf"'{re.escape(name)}'.*model\.pkl"):
            reader(path)
    assert not marker.exists()


def test_refuses_custom_classes(tmp_path):
    path = tmp_path / "custom.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": _CustomWeights()}}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match=r"_CustomWeights'.*custom\.pkl"):
        read_detectron2_pkl(path)


def test_refuses_files_that_are_not_detectron2_weights(tmp_path):
    cases = {
        "list.pkl": ([np.zeros(3, np.float32)], r"list.pkl holds a list, not a dict"),
        "blobs.pkl": (
            {"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}},
            r"blobs.pkl has no 'model' entry \(its keys: 'blobs'\).*Detectron \(caffe2\)",
        ),
        "model_list.pkl": ({"model": [1, 2]}, r"model_list.pkl: 'model' holds a list"),
    }
    for name, (obj, message) in cases.items():
        path = tmp_path / name
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        with pytest.raises(Detectron2WeightsError, match=message):
            load_detectron2_pkl(path)

    truncated = tmp_path / "truncated.pkl"
    truncated.write_bytes(pickle.dumps({"model": {"w": np.zeros(100, np.float32)}})[:50])
    with pytest.raises(Detectron2WeightsError, match=r"cannot read .*truncated\.pkl"):
        read_detectron2_pkl(truncated)

    strings = tmp_path / "strings.pkl"
    with open(strings, "wb") as f:
        pickle.dump({"model": {"backbone.fpn_lateral2.weight": np.array(["a"])}}, f)
    with pytest.raises(Detectron2WeightsError, match=r"strings\.pkl: .*fpn_lateral2.*dtype <U1"):
        load_detectron2_pkl(strings)


def test_detectron2_configs_load_and_say_what_detectron2_says():
    for config in (KEYPOINT_CFG, MASK_CFG):
        cfg = get_cfg()
        cfg.merge_from_file(str(config))  # an unknown key would be refused by name here
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1
        assert list(cfg.MODEL.PIXEL_MEAN) == [103.530, 116.280, 123.675]
        assert list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]
        assert cfg.INPUT.FORMAT == "BGR"
        assert cfg.MODEL.ROI_BOX_HEAD.POOLER_TYPE == "ROIAlignV2"
        assert (cfg.MODEL.ROI_BOX_HEAD.NUM_CONV, cfg.MODEL.ROI_BOX_HEAD.NUM_FC) == (0, 2)
        assert cfg.MODEL.ROI_BOX_HEAD.FC_DIM == 1024
        assert not any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)
    kp = get_cfg()
    kp.merge_from_file(str(KEYPOINT_CFG))
    assert kp.MODEL.KEYPOINT_ON and not kp.MODEL.MASK_ON
    assert kp.MODEL.RPN.POST_NMS_TOPK_TRAIN == 1500
    assert tuple(kp.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS) == (512,) * 8
    assert not kp.MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT
    assert not kp.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON
    mask = get_cfg()
    mask.merge_from_file(str(MASK_CFG))
    assert mask.MODEL.MASK_ON and not mask.MODEL.KEYPOINT_ON
    assert mask.MODEL.RPN.POST_NMS_TOPK_TRAIN == 1000


# ---------------------------------------------------------------------------------------------
# through MODEL.WEIGHTS: the checkpointer reads .pkl files
# ---------------------------------------------------------------------------------------------
def test_checkpointer_loads_the_pkl_completely(keypoint_file, keypoint_loaded):
    from multitask.engine.checkpoint import MultiTaskCheckpointer

    model = _build(KEYPOINT_CFG)
    ckpt = MultiTaskCheckpointer(model)
    ckpt.load(str(keypoint_file[0]))
    assert sum(r["missing"] + r["unexpected"] + r["shape"] for r in ckpt.last_report) == 0
    own = model.state_dict()
    for k, v in keypoint_loaded["model"].items():
        assert torch.equal(own[k], v), k  # BGR file, BGR config: conv1 untouched too


def test_checkpointer_keeps_person_of_an_80_class_pkl(tmp_path, mask_model):
    from multitask.engine.checkpoint import MultiTaskCheckpointer

    d2 = d2_random_arrays(d2_r50_fpn_shapes(80, keypoints=False, masks=True), seed=4)
    path = write_d2_pkl(tmp_path / "model_final_f10217.pkl", d2, protocol=4)
    model = _build(MASK_CFG)  # NUM_CLASSES 1
    ckpt = MultiTaskCheckpointer(model)
    ckpt.load(str(path))
    assert sum(r["missing"] + r["unexpected"] + r["shape"] for r in ckpt.last_report) == 0
    cls = torch.from_numpy(d2["roi_heads.box_predictor.cls_score.weight"])
    assert torch.equal(model.roi_heads.box_predictor.cls_score.weight, cls[[80, 0]])
