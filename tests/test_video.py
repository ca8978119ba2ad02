"""People over time: multitask.engine.video (the runner on a synthetic clip with a predictor that
returns the ground truth), its outputs, tools/eval_tracking.py --predictions, bad video inputs,
and tools/demo.py --video with the tiny random-init model. Fast: a 12-frame 96x128 clip."""
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from multitask import Instances
from multitask.benchmark.tiny_model import TINY_MODEL
from multitask.config import get_cfg
from multitask.data.synthetic import ACTIVITY_CLASSES, generate_synthetic_clip
from multitask.engine import video as video_module
from multitask.engine.video import VideoInputError, VideoRunner, VideoSource
from multitask.engine.video_output import TrackedVideoWriter, draw_tracked_frame, read_records

REPO = Path(__file__).resolve().parents[1]
NUM_FRAMES = 12
SIZE = (96, 128)  # (H, W)
FPS = 25
MIN_HITS = get_cfg().TRACKING.MIN_HITS
# pycocotools' mask.decode under numpy 2 warns about __array__(copy=...); not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def keep_logging():
    """The command-line tools configure the ``multitask`` logger (own handler, no propagation):
    restored after a test that runs one in-process."""
    log = logging.getLogger("multitask")
    saved = (list(log.handlers), log.propagate, log.level)
    yield
    log.handlers[:], log.propagate, log.level = saved


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 12-frame clip of 2 or 3 people who stay in view: (ClipPaths, annotations json)."""
    out = str(tmp_path_factory.mktemp("clip") / "clip_000000")
    paths = generate_synthetic_clip(out, NUM_FRAMES, seed=0, fps=FPS, image_size=SIZE,
                                    min_people=2, max_people=3, arrival_rate=0.0,
                                    min_keypoint_area=0)
    with open(paths.annotations) as f:
        return paths, json.load(f)


class GroundTruthPredictor:
    """A stand-in for the model: the clip's people of the next frame (one call per frame), with
    Gaussian noise on the keypoints and, every fourth frame, the wrong per-frame activity."""

    def __init__(self, js, noise=1.0, seed=0):
        self.frames = {}
        for ann in js["annotations"]:
            self.frames.setdefault(ann["image_id"] - 1, []).append(ann)
        self.size = (js["video"]["height"], js["video"]["width"])
        self.rng = np.random.default_rng(seed)
        self.noise = noise
        self.calls = 0

    def __call__(self, image):
        assert image.shape[:2] == self.size
        anns = self.frames.get(self.calls, [])
        self.calls += 1
        n = len(anns)
        boxes = np.array([a["bbox"] for a in anns], np.float64).reshape(n, 4)
        boxes[:, 2:] += boxes[:, :2]
        kps = np.array([a["keypoints"] for a in anns], np.float64).reshape(n, 17, 3)
        kps[..., :2] += self.rng.normal(0.0, self.noise, (n, 17, 2))
        kps[..., 2] = (kps[..., 2] > 0).astype(np.float64)
        probs = np.full((n, len(ACTIVITY_CLASSES)), 0.1)
        for i, a in enumerate(anns):
            shift = 1 if self.calls % 4 == 0 else 0
            probs[i, (ACTIVITY_CLASSES.index(a["activity"]) + shift) % len(ACTIVITY_CLASSES)] = 0.7
        inst = Instances(self.size)
        inst.pred_boxes = torch.from_numpy(boxes)
        inst.scores = torch.full((n,), 0.95, dtype=torch.float64)
        inst.pred_classes = torch.zeros(n, dtype=torch.int64)
        inst.pred_keypoints = torch.from_numpy(kps)
        inst.activity_scores = torch.from_numpy(probs)
        inst.pred_activity = torch.from_numpy(probs.argmax(1))
        return {"instances": inst}


def _gt_track_ids(js, frame):
    return [a["track_id"] for a in js["annotations"] if a["image_id"] == frame + 1]


def test_runner_tracks_the_ground_truth(clip):
    paths, js = clip
    runner = VideoRunner(predictor=GroundTruthPredictor(js))
    records = list(runner.records(paths.video))
    assert [r["frame"] for r in records] == list(range(NUM_FRAMES))
    assert [r["time"] for r in records] == pytest.approx([f / FPS for f in range(NUM_FRAMES)])
    json.dumps(records, allow_nan=False)  # JSON-ready
    mapping = {}
    for r in records:
        gt_ids = _gt_track_ids(js, r["frame"])
        assert len(r["people"]) == len(gt_ids) >= 2
        for gt_id, person in zip(gt_ids, r["people"]):
            assert set(person) == {"track_id", "box", "score", "keypoints", "keypoints_smoothed",
                                   "activity", "track_activity"}
            assert len(person["box"]) == 4 and np.shape(person["keypoints"]) == (17, 3)
            if r["frame"] < MIN_HITS - 1:
                assert person["track_id"] == -1  # tentative: not confirmed yet
            else:
                assert mapping.setdefault(gt_id, person["track_id"]) == person["track_id"]
            assert person["activity"]["name"] in ACTIVITY_CLASSES
            assert person["track_activity"]["name"] in ACTIVITY_CLASSES
    assert sorted(mapping.values()) == list(range(1, len(mapping) + 1))  # one ID per person
    last = records[-1]["people"][0]
    assert not np.allclose(last["keypoints"], last["keypoints_smoothed"])
    truth = js["tracks"][_gt_track_ids(js, NUM_FRAMES - 1)[0] - 1]["activity"]
    assert last["track_activity"]["name"] == truth  # the window outvotes the wrong frames


@pytest.fixture(scope="module")
def predictions(clip, tmp_path_factory):
    """The runner's annotated video and JSON-lines records of the clip."""
    paths, js = clip
    out = tmp_path_factory.mktemp("pred")
    runner = VideoRunner(predictor=GroundTruthPredictor(js))
    with VideoSource(paths.video) as source, TrackedVideoWriter(
            str(out / "clip.mp4"), str(out / "clip.jsonl"), source.fps) as writer:
        for frame in runner.run(source):
            writer.write(frame.image, frame.record)
    return out


def _count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_outputs_and_drawing(clip, predictions):
    records = read_records(str(predictions / "clip.jsonl"))
    assert len(records) == NUM_FRAMES and records[3]["frame"] == 3
    assert _count_frames(predictions / "clip.mp4") == NUM_FRAMES
    image = np.full(SIZE + (3,), 128, np.uint8)
    drawn = draw_tracked_frame(image, records[-1])
    assert drawn.shape == image.shape and (drawn != 128).any()
    assert (image == 128).all()  # the input is not modified
    empty = draw_tracked_frame(image, {"frame": 0, "time": 0.0, "people": []})
    np.testing.assert_array_equal(empty, image)


def test_eval_tracking_on_predictions(clip, predictions, tmp_path, keep_logging):
    paths, _ = clip
    tool = _load_tool("eval_tracking")
    out = tmp_path / "eval"
    metrics = tool.main([os.path.dirname(paths.gt), "--output-dir", str(out),
                         "--predictions", str(predictions / "clip.jsonl")])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # everyone is found from their MIN_HITS-th frame on, with one ID each
    assert metrics["tracking/MOTA"] > 0.75
    assert metrics["tracking/ID_switches"] == 0 and metrics["tracking/false_positives"] == 0
    assert metrics["tracking/IDF1"] > 0.85
    for key in ("jitter/raw", "jitter/smoothed", "jitter/gt_accel", "activity/per_frame",
                "activity/windowed", "activity/per_track", "clips/clip_000000/tracking/MOTA"):
        assert metrics[key] is not None, key
    assert metrics["jitter/samples"] > 0
    assert metrics["jitter/smoothed"] < metrics["jitter/raw"]  # the One-Euro filter smooths
    assert metrics["activity/per_frame"] < metrics["activity/windowed"] == 1.0
    assert metrics["activity/per_track"] == 1.0


def test_iou_distance():
    tool = _load_tool("eval_tracking")
    gt = np.array([[0, 0, 10, 10], [50, 50, 10, 10]], float)  # XYWH
    hyp = np.array([[1, 0, 10, 10], [55, 50, 10, 10], [0, 0, 0, 0]], float)
    d = tool.iou_distance(gt, hyp)
    assert d.shape == (2, 3)
    assert d[0, 0] == pytest.approx(1 - 90 / 110)
    assert np.isnan(d[1, 1]) and np.isnan(d[0, 1]) and np.isnan(d[:, 2]).all()  # IoU < 0.5
    assert tool.iou_distance(np.zeros((0, 4)), hyp).shape == (0, 3)


# ------------------------------------------------------------------------------------------------
# bad inputs
# ------------------------------------------------------------------------------------------------
def _write_frames(folder, sizes):
    folder.mkdir()
    for i, (h, w) in enumerate(sizes):
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.full((h, w, 3), 30 * i, np.uint8))
    return folder


def test_unreadable_and_empty_videos(tmp_path):
    with pytest.raises(VideoInputError, match="missing.mp4: no such file"):
        VideoSource(str(tmp_path / "missing.mp4"))
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 10)
    with pytest.raises(VideoInputError, match="garbage.mp4: cannot be opened as a video"):
        VideoSource(str(garbage))
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoInputError, match=r"zero.mp4: empty file \(0 bytes\)"):
        VideoSource(str(tmp_path / "zero.mp4"))
    empty = tmp_path / "empty.avi"  # a valid container without frames
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    assert writer.isOpened()
    writer.release()
    with pytest.raises(VideoInputError, match="empty.avi: no frame could be decoded"):
        VideoSource(str(empty))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(VideoInputError, match="nothing: a folder without image files"):
        VideoSource(str(tmp_path / "nothing"), fps=10)


def test_missing_frame_rate(tmp_path, monkeypatch):
    frames = _write_frames(tmp_path / "frames", [(24, 32)] * 2)
    with pytest.raises(VideoInputError, match="frames: a folder of frames has no frame rate: "
                                              "pass --fps"):
        VideoSource(str(frames))
    with VideoSource(str(frames), fps=12.5) as source:
        assert source.fps == 12.5 and source.num_frames == 2
    video = tmp_path / "v.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    writer.write(np.zeros((24, 32, 3), np.uint8))
    writer.release()

    class NoFps:  # a video whose container gives no frame rate
        def __init__(self, path):
            self.capture = cv2.VideoCapture(path)

        def get(self, prop):
            return 0.0 if prop == cv2.CAP_PROP_FPS else self.capture.get(prop)

        def __getattr__(self, name):
            return getattr(self.capture, name)

    class Cv2WithoutFps:  # cv2 as multitask.engine.video sees it
        VideoCapture = NoFps

        def __getattr__(self, name):
            return getattr(cv2, name)

    monkeypatch.setattr(video_module, "cv2", Cv2WithoutFps())
    with pytest.raises(VideoInputError, match=r"v.avi: the video gives no frame rate \(fps 0\): "
                                              "pass --fps"):
        VideoSource(str(video))
    with VideoSource(str(video), fps=7) as source:
        assert source.fps == 7.0 and [i for i, _ in source] == [0]


def test_frame_of_another_size_stops_the_video(tmp_path, caplog):
    frames = _write_frames(tmp_path / "frames", [(24, 32)] * 3 + [(20, 32), (24, 32)])
    runner = VideoRunner(predictor=GroundTruthPredictor(
        {"annotations": [], "video": {"height": 24, "width": 32}}))
    out = tmp_path / "out"
    with VideoSource(str(frames), fps=10) as source, TrackedVideoWriter(
            str(out / "v.mp4"), str(out / "v.jsonl"), source.fps) as writer:
        for frame in runner.run(source):
            writer.write(frame.image, frame.record)
    assert source.frames_read == 3 and "frame 3 is 32x20" in source.stop_reason
    assert "frame 3 is 32x20, the frames before it 32x24" in caplog.text
    assert [r["frame"] for r in read_records(str(out / "v.jsonl"))] == [0, 1, 2]
    assert _count_frames(out / "v.mp4") == 3  # the video is finalised


# ------------------------------------------------------------------------------------------------
# tools/demo.py --video
# ------------------------------------------------------------------------------------------------
def test_demo_video_arguments_and_bad_input(tmp_path, capfd, keep_logging):
    demo = _load_tool("demo")
    args = demo.parse_args(["--video", "a.mp4", "--fps", "12", "--output", "o", "SEED", "1"])
    assert args.video_input == "a.mp4" and args.fps == 12.0 and args.opts == ["SEED", "1"]
    frames = _write_frames(tmp_path / "frames", [(24, 32)] * 2)
    assert demo.main(["--video", str(frames), "--output", str(tmp_path / "out")]) == 1
    assert "a folder of frames has no frame rate: pass --fps" in capfd.readouterr().out
    assert not (tmp_path / "out").exists()  # nothing written, no model built


def test_demo_video_with_tiny_model(clip, tmp_path):
    """The real (random-init) model through tools/demo.py --video on 3 frames of the clip and one
    of another size, which ends the video."""
    paths, _ = clip
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        name = f"{i:06d}.jpg"
        (frames / name).write_bytes(Path(paths.frames_dir, name).read_bytes())
    cv2.imwrite(str(frames / "000003.jpg"), np.zeros((48, 64, 3), np.uint8))
    out = tmp_path / "vis"
    opts = [str(v).replace(" ", "") for v in TINY_MODEL] + [
        "TRACKING.MIN_SCORE", "0.0", "TRACKING.MIN_HITS", "1", "SEED", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "demo.py"), "--video", str(frames), "--fps", "10",
         "--output", str(out), "--confidence-threshold", "0.0", *opts],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "stopped early" in log and "1 video(s) processed" in log
    records = read_records(str(out / "frames.jsonl"))
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert records[1]["time"] == pytest.approx(0.1)
    ids = [p["track_id"] for r in records for p in r["people"]]
    assert ids and all(i > 0 for i in ids)  # everyone tracked (MIN_SCORE 0, MIN_HITS 1)
    assert _count_frames(out / "frames.mp4") == 3
