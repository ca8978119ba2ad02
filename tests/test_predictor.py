"""DefaultPredictor: test-time resize, predictions in the original image's frame, batching,
input checks and weight loading (tiny random-init model, CPU)."""
import cv2
import numpy as np
import pytest
import torch
from tiny_model import TINY_MODEL

from multitask import get_cfg
from multitask.data.transforms import ResizeTransform
from multitask.engine import DefaultPredictor, MultiTaskCheckpointer

H, W = 128, 192  # the original image; MIN_SIZE_TEST = H / 2 -> the model sees 64 x 96
SMALL_H, SMALL_W = 64, 96

TINY = TINY_MODEL + [
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", 6,
    "INPUT.MIN_SIZE_TEST", SMALL_H,
    "INPUT.MAX_SIZE_TEST", 1000,
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(*overrides):
    cfg = get_cfg()
    cfg.merge_from_list(TINY + list(overrides))
    return cfg


@pytest.fixture(scope="module")
def predictor(one_thread):
    torch.manual_seed(0)
    return DefaultPredictor(_cfg())


def _image(h=H, w=W, seed=0):
    """Smooth coloured blobs (BGR uint8): structure at several scales, deterministic."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 10, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _run_model_on_resized(predictor, image):
    """The model called directly on the image resized to 64 x 96, predictions left in that frame."""
    small = ResizeTransform(H, W, SMALL_H, SMALL_W).apply_image(image)
    x = torch.as_tensor(np.ascontiguousarray(small.transpose(2, 0, 1)))
    with torch.inference_mode():
        return predictor.model([{"image": x}])[0]["instances"]


def test_predictions_are_in_the_original_frame(predictor):
    image = _image()
    before = image.copy()
    inst = predictor(image)["instances"]
    np.testing.assert_array_equal(image, before)  # the input is not modified
    assert inst.image_size == (H, W)
    r = len(inst)
    assert r > 0
    assert inst.pred_masks.shape == (r, H, W) and inst.pred_masks.dtype == torch.bool
    assert inst.pred_keypoints.shape == (r, 17, 3)
    b = inst.pred_boxes
    assert (b[:, 0::2] >= 0).all() and (b[:, 0::2] <= W).all()
    assert (b[:, 1::2] >= 0).all() and (b[:, 1::2] <= H).all()

    # the same model on the resized image, without "height"/"width": predictions at 64 x 96.
    # The predictor's must be exactly those, scaled by 2.
    ref = _run_model_on_resized(predictor, image)
    assert ref.image_size == (SMALL_H, SMALL_W)
    assert len(ref) == r
    torch.testing.assert_close(inst.scores, ref.scores)
    torch.testing.assert_close(inst.pred_boxes, ref.pred_boxes * 2, rtol=0, atol=1e-3)
    torch.testing.assert_close(
        inst.pred_keypoints[..., :2], ref.pred_keypoints[..., :2] * 2, rtol=0, atol=1e-3
    )
    # some prediction reaches beyond the 64 x 96 frame: a predictor that forgot to rescale
    # would not
    boxes = inst.pred_boxes
    assert float(boxes[:, 2].max()) > SMALL_W or float(boxes[:, 3].max()) > SMALL_H
    # masks pasted at 128 x 192 agree with the 64 x 96 ones upsampled
    up = ref.pred_masks.repeat_interleave(2, dim=1).repeat_interleave(2, dim=2)
    for m, u in zip(inst.pred_masks, up):
        if u.sum() > 20:
            iou = (m & u).sum().item() / max(1, (m | u).sum().item())
            assert iou > 0.7


def test_predict_batch(predictor):
    a, b = _image(seed=1), _image(96, 160, seed=2)
    single = predictor(a)["instances"]
    outs = predictor.predict_batch([a, b])
    assert len(outs) == 2
    assert outs[0]["instances"].image_size == (H, W)
    assert outs[1]["instances"].image_size == (96, 160)
    assert outs[1]["instances"].pred_masks.shape[1:] == (96, 160)
    # two images of the same size: the batched call equals the single ones
    same = predictor.predict_batch([a, a.copy()])
    for o in same:
        torch.testing.assert_close(o["instances"].pred_boxes, single.pred_boxes, atol=1e-3, rtol=0)
        torch.testing.assert_close(o["instances"].scores, single.scores, atol=1e-5, rtol=0)
    assert predictor.predict_batch([]) == []


def test_grayscale_and_channel_order(predictor):
    image = _image(seed=3)
    gray = image[:, :, 1].copy()
    ref = predictor(np.repeat(gray[:, :, None], 3, axis=2))["instances"]
    for g in (gray, gray[:, :, None]):
        out = predictor(g)["instances"]
        assert out.image_size == (H, W)
        torch.testing.assert_close(out.pred_boxes, ref.pred_boxes)

    # an RGB-ordered array with input_format="RGB" gives the BGR result
    bgr = predictor(image)["instances"]
    predictor.input_format = "RGB"
    try:
        rgb = predictor(np.ascontiguousarray(image[:, :, ::-1]))["instances"]
    finally:
        predictor.input_format = "BGR"
    torch.testing.assert_close(rgb.pred_boxes, bgr.pred_boxes)


def test_bad_inputs_give_clear_errors(predictor):
    image = _image()
    with pytest.raises(TypeError, match="uint8"):
        predictor(image.astype(np.float32) / 255)
    with pytest.raises(ValueError, match=r"\(H, W, 3\).*alpha"):
        predictor(np.concatenate([image, image[:, :, :1]], axis=2))
    with pytest.raises(ValueError, match="empty"):
        predictor(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        predictor(torch.zeros(3, 10, 10, dtype=torch.uint8))
    with pytest.raises(TypeError, match="list"):
        predictor.predict_batch(image)


def test_loads_model_weights(predictor, tmp_path):
    MultiTaskCheckpointer(predictor.model, save_dir=str(tmp_path)).save("model_final")
    torch.manual_seed(123)  # a different random init, replaced by the weights
    other = DefaultPredictor(_cfg("MODEL.WEIGHTS", str(tmp_path / "model_final.pth")))
    assert not other.model.training
    image = _image(seed=4)
    a, b = predictor(image)["instances"], other(image)["instances"]
    torch.testing.assert_close(a.pred_boxes, b.pred_boxes)
    torch.testing.assert_close(a.pred_keypoints, b.pred_keypoints)
