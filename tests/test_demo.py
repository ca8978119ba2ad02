"""The drawing functions (multitask.utils.visualizer) and tools/demo.py (run as a subprocess with a
tiny random-init model on CPU): folders with unreadable files, grayscale images, videos, json."""
import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from shared_data import COCO_MINI_VAL_IMAGES as COCO_VAL

from multitask import Instances
from multitask.utils.visualizer import (
    CENTER_COLOR,
    LEFT_COLOR,
    RIGHT_COLOR,
    default_sizes,
    draw_ground_truth,
    draw_instance_predictions,
    instance_color,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "tools" / "demo.py"

NAMES = [
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
]  # fmt: skip
# a person facing the camera in a unit square (x, y): their left is on the image's right
POSE = {
    "nose": (0.50, 0.16), "left_eye": (0.52, 0.14), "right_eye": (0.48, 0.14),
    "left_ear": (0.54, 0.15), "right_ear": (0.46, 0.15),
    "left_shoulder": (0.58, 0.28), "right_shoulder": (0.42, 0.28),
    "left_elbow": (0.70, 0.40), "right_elbow": (0.30, 0.40),
    "left_wrist": (0.74, 0.58), "right_wrist": (0.26, 0.58),
    "left_hip": (0.56, 0.55), "right_hip": (0.44, 0.55),
    "left_knee": (0.60, 0.72), "right_knee": (0.40, 0.72),
    "left_ankle": (0.61, 0.90), "right_ankle": (0.39, 0.90),
}  # fmt: skip
GREY = 128


def _person(size, score=0.9, activity=False, low_score_keypoint=None):
    """One person on a (size, size) grey image: box, a torso mask, keypoints (x, y, score)."""
    s = float(size)
    inst = Instances((size, size))
    inst.pred_boxes = torch.tensor([[0.22 * s, 0.08 * s, 0.78 * s, 0.95 * s]])
    inst.scores = torch.tensor([score])
    inst.pred_classes = torch.tensor([0])
    mask = np.zeros((size, size), np.uint8)
    cv2.ellipse(mask, (size // 2, int(0.42 * s)), (int(0.07 * s), int(0.1 * s)), 0, 0, 360, 1, -1)
    inst.pred_masks = torch.from_numpy(mask.astype(bool))[None]
    kp = torch.tensor([[POSE[n][0] * s, POSE[n][1] * s, 5.0] for n in NAMES])
    if low_score_keypoint is not None:
        kp[NAMES.index(low_score_keypoint), 2] = -1.0
    inst.pred_keypoints = kp[None]
    if activity:
        inst.pred_activity = torch.tensor([1])
        inst.activity_scores = torch.tensor([[0.1, 0.87, 0.02, 0.01]])
    return inst


def _window(img, x, y, r):
    x, y = int(x), int(y)
    return img[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1].reshape(-1, 3).astype(float)


def _min_dist(pixels, color):
    return float(np.linalg.norm(pixels - np.asarray(color, float), axis=1).min())


def _mid(a, b, s):
    return (POSE[a][0] + POSE[b][0]) / 2 * s, (POSE[a][1] + POSE[b][1]) / 2 * s


@pytest.mark.parametrize("size", [100, 2000])
def test_draw_predictions(size):
    image = np.full((size, size, 3), GREY, np.uint8)
    before = image.copy()
    inst = _person(size, low_score_keypoint="right_knee")
    out = draw_instance_predictions(image, inst, score_thresh=0.5)
    np.testing.assert_array_equal(image, before)  # the input is not modified
    assert out.shape == image.shape and out.dtype == np.uint8
    r = max(2, default_sizes(size, size)["line_width"])
    s = float(size)

    # the mask is tinted with the instance colour
    cy, cx = int(0.42 * s), size // 2
    tinted = out[cy, cx].astype(float)
    assert np.linalg.norm(tinted - GREY) > 20
    color = np.asarray(instance_color(0), float)
    assert np.linalg.norm(tinted - color) < np.linalg.norm(before[cy, cx] - color)
    # the box's left edge is drawn, a far corner is not touched
    assert _min_dist(_window(out, 0.22 * s - 0.5, 0.8 * s, r), instance_color(0)) < 60
    assert (out[-2:, -2:] == GREY).all()
    # left and right forearms in the two limb colours
    left = _window(out, *_mid("left_elbow", "left_wrist", s), r)
    right = _window(out, *_mid("right_elbow", "right_wrist", s), r)
    assert _min_dist(left, LEFT_COLOR) < _min_dist(left, RIGHT_COLOR)
    assert _min_dist(right, RIGHT_COLOR) < _min_dist(right, LEFT_COLOR)
    assert _min_dist(left, LEFT_COLOR) < 80 and _min_dist(right, RIGHT_COLOR) < 80
    # the shoulder line is a centre line
    mid = _window(out, *_mid("left_shoulder", "right_shoulder", s), r)
    assert _min_dist(mid, CENTER_COLOR) < 80
    # the low-score right knee is hidden with its limbs: the right thigh is not drawn
    x, y = _mid("right_hip", "right_knee", s)
    assert (_window(out, x, y, 1) == GREY).all()
    x, y = _mid("left_hip", "left_knee", s)
    assert not (_window(out, x, y, r) == GREY).all()
    # the label (score) above the box
    label_zone = out[max(0, int(0.08 * s) - 3): int(0.08 * s), int(0.22 * s): int(0.5 * s)]
    assert (label_zone != GREY).any()


def test_draw_sizes_scale_with_image():
    small, large = default_sizes(100, 100), default_sizes(2000, 2000)
    assert large["line_width"] >= 4 * small["line_width"]
    assert large["font_scale"] >= 4 * small["font_scale"]
    assert small["font_scale"] >= 0.3  # still legible on a thumbnail


def test_draw_predictions_filters_and_labels():
    image = np.full((200, 200, 3), GREY, np.uint8)
    # under the score threshold: nothing drawn
    out = draw_instance_predictions(image, _person(200, score=0.3), score_thresh=0.5)
    np.testing.assert_array_equal(out, image)
    # the activity line adds to the label block
    plain = draw_instance_predictions(image, _person(200))
    with_act = draw_instance_predictions(
        image, _person(200, activity=True),
        activity_classes=["walking", "running", "sitting", "standing"],
    )
    assert (plain != with_act).any()
    # predictions for another image size are refused
    with pytest.raises(ValueError, match="size"):
        draw_instance_predictions(np.zeros((100, 100, 3), np.uint8), _person(200))
    # grayscale input, no people
    empty = Instances((50, 60))
    empty.pred_boxes = torch.zeros((0, 4))
    empty.scores = torch.zeros((0,))
    gray = np.full((50, 60), 7, np.uint8)
    assert draw_instance_predictions(gray, empty).shape == (50, 60, 3)


def test_draw_ground_truth():
    size = 160
    image = np.full((size, size, 3), GREY, np.uint8)
    kps = []
    for n in NAMES:
        x, y = POSE[n]
        v = 0 if n == "right_knee" else 2
        kps += [x * size, y * size, v]
    anno = {
        "bbox": [0.22 * size, 0.08 * size, 0.78 * size, 0.95 * size],
        "bbox_mode": "XYXY_ABS",
        "category_id": 0,
        "segmentation": [[70, 50, 90, 50, 90, 80, 70, 80]],
        "keypoints": kps,
        "iscrowd": 0,
        "activity": "walking",
    }
    out = draw_ground_truth(image, {"annotations": [anno]})
    assert _min_dist(_window(out, 80, 65, 1), instance_color(0)) < np.linalg.norm(
        np.full(3, GREY) - instance_color(0)
    )
    left = _window(out, *_mid("left_elbow", "left_wrist", size), 2)
    assert _min_dist(left, LEFT_COLOR) < _min_dist(left, RIGHT_COLOR)
    x, y = _mid("right_hip", "right_knee", size)  # v = 0: hidden
    assert (_window(out, x, y, 1) == GREY).all()


# ------------------------------------------------------------------------------------------------
# tools/demo.py
# ------------------------------------------------------------------------------------------------
TINY_OPTS = [
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", "18",
    "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST", "100",
    "MODEL.RPN.POST_NMS_TOPK_TEST", "20",
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", "3",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "1",
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", "[16, 16]",
    "INPUT.MIN_SIZE_TEST", "64",
    "SEED", "0",
]  # fmt: skip


def _run_demo(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(DEMO), *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def _load_demo_module():
    spec = importlib.util.spec_from_file_location("demo_tool", DEMO)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_argument_handling(tmp_path):
    demo = _load_demo_module()
    args = demo.parse_args(
        ["--input", "a.jpg", "b.jpg", "--output", "out", "MODEL.DEVICE", "cpu", "SEED", "3"]
    )
    assert args.input == ["a.jpg", "b.jpg"]
    assert args.opts == ["MODEL.DEVICE", "cpu", "SEED", "3"]
    args = demo.parse_args(["--input", "a.jpg", "--opts", "MODEL.DEVICE", "cpu"])
    assert args.opts == ["MODEL.DEVICE", "cpu"]

    (tmp_path / "d").mkdir()
    for name in ["b.jpg", "a.png", ".hidden.jpg"]:
        (tmp_path / "d" / name).write_bytes(b"x")
    (tmp_path / "c.jpg").write_bytes(b"x")
    files, unmatched = demo.expand_inputs(
        [str(tmp_path / "d"), str(tmp_path / "*.jpg"), str(tmp_path / "d" / "a.png"),
         str(tmp_path / "none*.jpg")]
    )
    assert [os.path.relpath(f, tmp_path) for f in files] == ["c.jpg", "d/a.png", "d/b.jpg"]
    assert unmatched == [str(tmp_path / "none*.jpg")]
    names = demo.output_names(["x/a.jpg", "y/a.jpg", "z/a.gif"], "out")
    assert names == ["out/a.jpg", "out/a_1.jpg", "out/a.png"]
    assert demo.output_names(["x/a.jpg"], "vis.png") == ["vis.png"]
    assert demo.image_id_of("/d/000000000139.jpg", 5) == 139
    assert demo.image_id_of("/d/gray.png", 5) == 5


def test_demo_folder_with_gray_and_corrupt_images(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    real = sorted(glob.glob(os.path.join(COCO_VAL, "*.jpg")))
    if real:
        real_name = os.path.basename(real[0])
        (src / real_name).write_bytes(Path(real[0]).read_bytes())
        real_shape = cv2.imread(real[0]).shape
    else:  # no coco-mini here: a synthetic colour image stands in
        real_name = "000000000001.jpg"
        rng = np.random.default_rng(0)
        cv2.imwrite(str(src / real_name), rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
        real_shape = (120, 160, 3)
    gray = (np.indices((70, 90)).sum(0) * 2 % 256).astype(np.uint8)
    cv2.imwrite(str(src / "gray.png"), gray)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"this is not a jpeg" * 20)
    out = tmp_path / "out"

    rc, log = _run_demo(
        "--input", src, "--output", out, "--json", "--confidence-threshold", "0.0", *TINY_OPTS
    )
    assert rc == 0, log
    stem = os.path.splitext(real_name)[0]
    assert sorted(os.listdir(out)) == sorted([real_name, stem + ".json", "gray.json", "gray.png"])
    skip_lines = [ln for ln in log.splitlines() if "Skipping" in ln]
    assert len(skip_lines) == 1 and "broken.jpg" in skip_lines[0], log
    assert "2 image(s) processed, 1 skipped" in log
    assert cv2.imread(str(out / real_name)).shape == real_shape
    assert cv2.imread(str(out / "gray.png")).shape == (70, 90, 3)
    results = json.loads((out / (stem + ".json")).read_text())
    assert isinstance(results, list) and len(results) > 0
    r = results[0]
    assert r["image_id"] == int(stem) and r["category_id"] == 1
    assert len(r["bbox"]) == 4 and len(r["keypoints"]) == 51
    assert r["segmentation"]["size"] == list(real_shape[:2])
    gray_results = json.loads((out / "gray.json").read_text())
    assert all(g["segmentation"]["size"] == [70, 90] for g in gray_results)


def test_demo_video(tmp_path):
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (96, 64))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for i in range(5):
        frame = np.full((64, 96, 3), 40 * i, np.uint8)
        frame[10:50, 20 + 5 * i: 50 + 5 * i] = rng.integers(0, 255, 3, dtype=np.uint8)
        writer.write(frame)
    writer.release()
    out = tmp_path / "vis"

    rc, log = _run_demo(
        "--video-input", video, "--output", out, "--json", "--confidence-threshold", "0.0",
        *TINY_OPTS,
    )
    assert rc == 0, log
    cap = cv2.VideoCapture(str(out / "clip.mp4"))
    assert cap.isOpened()
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (64, 96, 3)
        frames += 1
    cap.release()
    assert frames == 5
    jsons = sorted(os.listdir(out / "clip_frames"))
    assert jsons == [f"{i:06d}.json" for i in range(5)]
    per_frame = json.loads((out / "clip_frames" / "000003.json").read_text())
    assert all(r["image_id"] == 3 for r in per_frame)
