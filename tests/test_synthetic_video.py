"""Tests of the synthetic video clips (multitask.data.synthetic.video / clip / motion). Fast
(a few seconds): clips of 24 small frames."""
import json
import os

import cv2
import numpy as np
import pytest

from multitask.data.coco import load_coco_person_json
from multitask.data.synthetic import (
    ACTIVITY_CLASSES,
    KEYPOINT_NAMES,
    SKELETON,
    generate_synthetic_clip,
    render_clip,
)
from multitask.data.synthetic.video import read_mot_gt

NUM_FRAMES = 24
SIZE = (96, 128)  # (H, W)
H, W = SIZE
_KP = {name: i for i, name in enumerate(KEYPOINT_NAMES)}
# pycocotools' mask.decode under numpy 2 warns about __array__(copy=...); not ours
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 24-frame clip with people entering: (directory, ClipPaths, json dict)."""
    out = str(tmp_path_factory.mktemp("clip"))
    paths = generate_synthetic_clip(out, NUM_FRAMES, seed=0, image_size=SIZE,
                                    max_people=5, arrival_rate=2.0)
    with open(paths.annotations) as f:
        js = json.load(f)
    return out, paths, js


def _by_track(js):
    """{track_id: [annotation, ...] in frame order}."""
    tracks = {}
    for a in sorted(js["annotations"], key=lambda a: a["image_id"]):
        tracks.setdefault(a["track_id"], []).append(a)
    return tracks


def _touches_border(bbox):
    """Whether an ``x, y, w, h`` box touches the border of a SIZE image."""
    x, y, w, h = bbox
    return x <= 0 or y <= 0 or x + w >= W or y + h >= H


def test_determinism(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    np.random.seed(1)
    pa = generate_synthetic_clip(a, 8, seed=3, image_size=SIZE)
    np.random.seed(2)  # the global RNG state must not matter
    pb = generate_synthetic_clip(b, 8, seed=3, image_size=SIZE)
    pc = generate_synthetic_clip(c, 8, seed=4, image_size=SIZE)
    for x, y in ((pa.gt, pb.gt), (pa.annotations, pb.annotations)):
        assert open(x, "rb").read() == open(y, "rb").read()
    names = sorted(os.listdir(pa.frames_dir))
    assert names == [f"{i:06d}.jpg" for i in range(8)] == sorted(os.listdir(pb.frames_dir))
    for n in names:
        assert open(os.path.join(pa.frames_dir, n), "rb").read() == \
            open(os.path.join(pb.frames_dir, n), "rb").read()
    assert open(pa.annotations, "rb").read() != open(pc.annotations, "rb").read()
    # frame f does not depend on the number of frames; clip_index gives another clip
    short = list(render_clip(3, 5, image_size=SIZE))
    for f, (img, _) in enumerate(short):  # the frames are the renders, as JPEG
        jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 92])[1]
        assert np.array_equal(cv2.imdecode(jpeg, 1), cv2.imread(os.path.join(pa.frames_dir,
                                                                             names[f])))
    longer = list(render_clip(3, 8, image_size=SIZE))
    for (img_s, ps), (img_l, pl) in zip(short, longer):
        assert np.array_equal(img_s, img_l)
        assert [p["track_id"] for p in ps] == [p["track_id"] for p in pl]
    other = next(render_clip(3, 1, image_size=SIZE, clip_index=1))[0]
    assert not np.array_equal(other, short[0][0])


def test_format(clip):
    out, paths, js = clip
    assert paths.video == os.path.join(out, "clip.mp4") and os.path.isdir(paths.frames_dir)
    (cat,) = js["categories"]
    assert cat["keypoints"] == KEYPOINT_NAMES and cat["skeleton"] == SKELETON
    assert js["activity_classes"] == ACTIVITY_CLASSES
    assert [im["frame_index"] for im in js["images"]] == list(range(NUM_FRAMES))
    for im in js["images"]:
        assert im["id"] == im["frame_index"] + 1 and im["video_fps"] == 25
        assert im["file_name"] == f"frames/{im['frame_index']:06d}.jpg"
        assert cv2.imread(os.path.join(out, im["file_name"])).shape == (H, W, 3)
    ids = [a["id"] for a in js["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    for a in js["annotations"]:
        assert a["activity"] in ACTIVITY_CLASSES and a["category_id"] == 1
        assert len(a["keypoints"]) == 51 and a["num_keypoints"] == sum(
            v > 0 for v in a["keypoints"][2::3])
        assert isinstance(a["segmentation"]["counts"], str) and 0 < a["visibility"] <= 1
    per_frame = [(a["image_id"], a["track_id"]) for a in js["annotations"]]
    assert len(set(per_frame)) == len(per_frame)  # one annotation per track and frame
    assert {t["id"] for t in js["tracks"]} == {a["track_id"] for a in js["annotations"]}


def test_tracks_stable_and_smooth(clip):
    _, _, js = clip
    tracks = _by_track(js)
    assert len(tracks) >= 2
    checked = 0
    for tid, anns in tracks.items():
        assert len({a["activity"] for a in anns}) == 1  # a track keeps its person
        for a, b in zip(anns, anns[1:]):
            if b["image_id"] != a["image_id"] + 1:
                continue
            if min(a["visibility"], b["visibility"]) < 0.999 or _touches_border(
                    a["bbox"]) or _touches_border(b["bbox"]):
                continue  # occluded, entering or leaving: the visible box may jump
            ca = np.array(a["bbox"][:2]) + 0.5 * np.array(a["bbox"][2:])
            cb = np.array(b["bbox"][:2]) + 0.5 * np.array(b["bbox"][2:])
            size = max(a["bbox"][3], b["bbox"][3], 10)
            assert np.linalg.norm(cb - ca) <= 0.25 * size, (tid, a["image_id"])
            assert abs(b["bbox"][3] - a["bbox"][3]) <= 0.25 * size, (tid, a["image_id"])
            checked += 1
    assert checked >= 10
    # the whole figure (its joints, occluded or outside the image too) moves smoothly for every
    # track in every frame, also while it enters, leaves or is hidden
    frames = list(render_clip(0, NUM_FRAMES, image_size=SIZE, max_people=5, arrival_rate=2.0))
    last = {}
    for f, (_, persons) in enumerate(frames):
        for p in persons:
            raw = p["keypoints_raw"]
            if p["track_id"] in last and last[p["track_id"]][0] == f - 1:
                prev = last[p["track_id"]][1]
                height = np.ptp(raw[:, 1])
                move = np.linalg.norm(raw - prev, axis=1)
                hips = [_KP["left_hip"], _KP["right_hip"]]
                assert move[hips].max() <= 0.15 * height, (p["track_id"], f)
                assert move.max() <= 0.45 * height, (p["track_id"], f)  # swinging feet
            last[p["track_id"]] = (f, raw)


def test_enter_and_leave(clip):
    _, _, js = clip
    entered = [anns for anns in _by_track(js).values() if anns[0]["image_id"] > 1]
    assert entered, "with arrival_rate 2/s someone enters"
    for anns in entered:  # arrivals come in through the left or right border
        x, _, w, _ = anns[0]["bbox"]
        assert anns[0]["activity"] in ("walking", "running")
        assert x <= 0 or x + w >= W


def _raw_track(frames, track_id):
    """(frames, 17, 2) raw projected keypoints of one track, over the frames it is in."""
    return np.array([p["keypoints_raw"] for _, persons in frames for p in persons
                     if p["track_id"] == track_id])


def test_motion_by_activity():
    frames = list(render_clip(1, NUM_FRAMES, image_size=(160, 200), min_person_height=70,
                              activities=["walking", "sitting", "standing"], arrival_rate=0))
    ids = {p["track_id"]: p["activity"] for _, persons in frames for p in persons}
    assert ids == {1: "walking", 2: "sitting", 3: "standing"}
    hips = [_KP["left_hip"], _KP["right_hip"]]
    ankles = [_KP["left_ankle"], _KP["right_ankle"]]
    walker, sitter, stander = (_raw_track(frames, t) for t in (1, 2, 3))
    assert len(walker) >= NUM_FRAMES // 2 and len(sitter) == len(stander) == NUM_FRAMES
    pelvis = walker[:, hips].mean(axis=1)
    step = np.diff(pelvis[:, 0])
    assert np.all(step > 0.3) or np.all(step < -0.3)  # walks steadily one way
    for person in (sitter, stander):
        p = person[:, hips].mean(axis=1)
        height = np.ptp(person[0][:, 1])
        assert np.ptp(p[:, 0]) < 0.05 * height and np.ptp(p[:, 1]) < 0.05 * height
    assert np.ptp(pelvis[:, 0]) > 5 * np.ptp(sitter[:, hips].mean(axis=1)[:, 0])
    # the gait: the ankles take turns in front (about one cycle per second)
    ahead = np.sign(walker[:, ankles[0], 0] - walker[:, ankles[1], 0])
    assert np.count_nonzero(np.diff(ahead)) >= 1


def test_running_is_faster(tmp_path):
    speeds = {}
    for activity in ("walking", "running"):
        frames = list(render_clip(2, 6, image_size=SIZE, activities=[activity], arrival_rate=0,
                                  min_person_height=40))
        raw = _raw_track(frames, 1)
        hip = raw[:, [_KP["left_hip"], _KP["right_hip"]]].mean(axis=1)
        height = np.ptp(raw[:, :, 1], axis=1).max()
        speeds[activity] = np.abs(np.diff(hip[:, 0])).mean() / height
    assert speeds["running"] > 1.5 * speeds["walking"]


def test_gt_matches_json(clip):
    _, paths, js = clip
    keys, boxes = read_mot_gt(paths.gt)
    lines = open(paths.gt).read().splitlines()
    assert len(lines) == len(js["annotations"]) == len(keys)
    assert all(line.endswith(",1,1,1") and len(line.split(",")) == 9 for line in lines)
    assert keys[:, 0].min() >= 1 and keys[:, 0].max() <= NUM_FRAMES  # frames from 1
    assert [tuple(k) for k in keys] == sorted(tuple(k) for k in keys)
    from_json = {(a["image_id"], a["track_id"]): a["bbox"] for a in js["annotations"]}
    for (frame, tid), box in zip(keys, boxes):
        assert from_json[(int(frame), int(tid))] == pytest.approx(list(box))


def test_video_readable(clip):
    _, paths, _ = clip
    cap = cv2.VideoCapture(paths.video)
    assert cap.isOpened()
    n = 0
    first = None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        first = frame if first is None else first
        assert frame.shape == (H, W, 3)
        n += 1
    cap.release()
    assert n == NUM_FRAMES
    jpeg = cv2.imread(os.path.join(paths.frames_dir, "000000.jpg"))
    assert np.abs(first.astype(int) - jpeg.astype(int)).mean() < 12  # same picture, lossy codec


def test_loads_with_coco_loader(clip):
    out, paths, js = clip
    dicts = load_coco_person_json(paths.annotations, out)
    assert len(dicts) == NUM_FRAMES
    by_id = {a["id"]: a for a in js["annotations"]}
    n = 0
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        for obj in d["annotations"]:
            src = by_id[obj["id"]]  # the loader keeps the annotation id: track_id is recoverable
            assert src["image_id"] == d["image_id"] and obj["activity"] == src["activity"]
            x, y, w, h = src["bbox"]
            assert obj["bbox"] == pytest.approx([x, y, x + w, y + h])
            n += 1
    assert n == len(js["annotations"])
