"""multitask.tracking: the pose tracker on a synthetic clip (MOTA with motmetrics), track birth and
deletion, config keys, One-Euro smoothing, windowed activity and input checks. numpy only."""
import motmetrics as mm
import numpy as np
import pytest

from multitask.config import get_cfg
from multitask.structures.keypoints import COCO_PERSON_OKS_SIGMAS
from multitask.tracking import (
    KeypointSmoother,
    OneEuroFilter,
    PoseTracker,
    WindowedActivity,
    assign,
    box_iou,
    keypoint_oks,
    matching_cost,
)

FPS = 25.0
NUM_FRAMES = 60

# A standing person's 17 COCO keypoints as (u, v) fractions of the box's width and height
POSE_UV = np.array([
    [0.50, 0.08], [0.55, 0.06], [0.45, 0.06], [0.62, 0.08], [0.38, 0.08],
    [0.72, 0.22], [0.28, 0.22], [0.80, 0.38], [0.20, 0.38], [0.82, 0.52], [0.18, 0.52],
    [0.64, 0.55], [0.36, 0.55], [0.66, 0.76], [0.34, 0.76], [0.66, 0.96], [0.34, 0.96],
])  # fmt: skip

# Ground-truth people: (start centre x, y), velocity (px per frame), box (w, h), dropped frames.
# "a" and "b" walk towards each other and cross near frame 24; "c" and "d" cross nobody.
PEOPLE = {
    1: dict(start=(80.0, 240.0), velocity=(10.0, 0.0), size=(60.0, 160.0), dropped=()),
    2: dict(start=(560.0, 260.0), velocity=(-10.0, 0.0), size=(60.0, 160.0),
            dropped=(30, 31, 32)),
    3: dict(start=(100.0, 400.0), velocity=(2.5, 0.5), size=(55.0, 150.0), dropped=()),
    4: dict(start=(380.0, 80.0), velocity=(1.5, -0.3), size=(50.0, 140.0),
            dropped=(10, 11, 12)),
}
CROSSING, NON_CROSSING = (1, 2), (3, 4)


def gt_box(person: dict, frame: int) -> np.ndarray:
    cx, cy = np.add(person["start"], np.multiply(person["velocity"], frame))
    w, h = person["size"]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def pose_in(box: np.ndarray) -> np.ndarray:
    """Keypoints (17, 3) of the template pose in ``box``, score 1."""
    xy = box[:2] + POSE_UV * (box[2:] - box[:2])
    return np.concatenate([xy, np.ones((17, 1))], axis=1)


def make_clip(seed: int = 0, noise: float = 2.0):
    """Per frame: (gt ids, gt boxes, detections dict). Detections are the ground truth with
    Gaussian noise, a few keypoints with a low score, dropped frames, one false positive every
    third frame (never at the same place twice) and shuffled order."""
    rng = np.random.default_rng(seed)
    clip = []
    for f in range(NUM_FRAMES):
        gt_ids = sorted(PEOPLE)
        gt_boxes = np.stack([gt_box(PEOPLE[i], f) for i in gt_ids])
        boxes, kps = [], []
        for i, box in zip(gt_ids, gt_boxes):
            if f in PEOPLE[i]["dropped"]:
                continue
            kp = pose_in(box)
            kp[:, :2] += rng.normal(0.0, noise, (17, 2))
            kp[:, 2] = rng.uniform(0.3, 1.0, 17)
            kp[rng.random(17) < 0.1, 2] = 0.01
            boxes.append(box + rng.normal(0.0, noise, 4))
            kps.append(kp)
        if f % 3 == 0:
            c = rng.uniform([50, 50], [600, 450])
            box = np.array([c[0] - 30, c[1] - 70, c[0] + 30, c[1] + 70])
            boxes.append(box)
            kps.append(pose_in(box) + np.r_[rng.normal(0, 15, 2), 0.0])
        order = rng.permutation(len(boxes))
        scores = rng.uniform(0.6, 1.0, len(boxes))
        clip.append((gt_ids, gt_boxes, dict(boxes=np.stack(boxes)[order], scores=scores,
                                            keypoints=np.stack(kps)[order])))
    return clip


def run_clip(tracker: PoseTracker, clip):
    """Per frame: the tracker's ids of the detections."""
    return [tracker.update(**det) for _, _, det in clip]


def mota_of(clip, all_ids):
    acc = mm.MOTAccumulator(auto_id=True)
    for (gt_ids, gt_boxes, det), ids in zip(clip, all_ids):
        keep = ids >= 0
        # motmetrics' own iou_matrix needs numpy < 2: the same distances (1 - IoU, NaN = no
        # match below IoU 0.5) computed here
        dist = 1.0 - box_iou(gt_boxes, det["boxes"][keep])
        dist[dist > 0.5] = np.nan
        acc.update(gt_ids, ids[keep].tolist(), dist)
    summary = mm.metrics.create().compute(
        acc, metrics=["mota", "num_switches", "num_false_positives", "num_misses"], name="clip")
    return {k: float(summary[k].iloc[0]) for k in summary.columns}


def ids_of_person(clip, all_ids, person: int):
    """The tracker ids given to ``person``'s detections (matched to its gt box by IoU)."""
    found = []
    for (gt_ids, gt_boxes, det), ids in zip(clip, all_ids):
        iou = box_iou(gt_boxes[[gt_ids.index(person)]], det["boxes"])[0]
        if iou.size and iou.max() > 0.5:
            found.append(int(ids[iou.argmax()]))
    return found


# ---- tracker ---------------------------------------------------------------------------------
def test_clip_mota_and_no_id_switch():
    clip = make_clip()
    all_ids = run_clip(PoseTracker(fps=FPS), clip)
    metrics = mota_of(clip, all_ids)
    assert metrics["mota"] >= 0.9, metrics
    assert metrics["num_false_positives"] == 0, metrics
    for person in NON_CROSSING:
        ids = [i for i in ids_of_person(clip, all_ids, person) if i >= 0]
        assert len(set(ids)) == 1, (person, ids)
    # the crossing pair keeps its ids too (the constant-velocity prediction and OKS)
    assert metrics["num_switches"] == 0, metrics


def test_birth_after_min_hits_and_deletion_after_max_misses():
    tracker = PoseTracker(min_hits=3, max_misses=4, fps=FPS)
    box = np.array([[100.0, 100.0, 160.0, 260.0]])
    det = dict(boxes=box, scores=np.array([0.9]), keypoints=pose_in(box[0])[None])
    empty = dict(boxes=np.zeros((0, 4)), scores=np.zeros(0), keypoints=np.zeros((0, 17, 3)))
    assert tracker.update(**det)[0] == -1 and tracker.update(**det)[0] == -1
    assert len(tracker.tentative_tracks) == 1 and tracker.tracks == []
    assert tracker.update(**det)[0] == 1  # third consecutive hit: confirmed, ID 1
    assert [t.track_id for t in tracker.active_tracks] == [1]
    for _ in range(3):  # coasts through max_misses - 1 missed frames
        tracker.update(**empty)
        assert [t.track_id for t in tracker.tracks] == [1] and tracker.active_tracks == []
    assert tracker.update(**det)[0] == 1  # matched again: same ID
    for _ in range(4):
        tracker.update(**empty)
    assert tracker.tracks == [] and tracker.deleted_ids == [1]  # deleted at the 4th miss
    # a tentative track dies at its first miss; the next birth needs min_hits hits again
    tracker.update(**det), tracker.update(**det), tracker.update(**empty)
    assert tracker.tentative_tracks == []
    ids = [tracker.update(**det)[0] for _ in range(3)]
    assert ids == [-1, -1, 2]


def test_min_score_and_raw_keypoints_for_matching():
    tracker = PoseTracker(min_hits=1, min_score=0.5, fps=FPS)
    boxes = np.array([[100.0, 100.0, 160.0, 260.0], [300.0, 100.0, 360.0, 260.0]])
    kps = np.stack([pose_in(b) for b in boxes])
    ids = tracker.update(boxes, np.array([0.9, 0.3]), kps)
    assert ids.tolist() == [1, -1]
    rng = np.random.default_rng(0)
    for f in range(1, 6):
        noisy = kps + np.r_[rng.normal(0, 3, 2), 0.0]
        tracker.update(boxes, np.array([0.9, 0.3]), noisy)
    track = tracker.get(1)
    np.testing.assert_array_equal(track.keypoints, noisy[0])  # raw, as detected
    assert not np.allclose(track.smoothed_keypoints[:, :2], noisy[0, :, :2])
    np.testing.assert_array_equal(track.smoothed_keypoints[:, 2], noisy[0, :, 2])


def test_config_keys_reach_the_tracker():
    cfg = get_cfg()
    cfg.merge_from_list([
        "TRACKING.IOU_WEIGHT", 1.0, "TRACKING.OKS_WEIGHT", 3.0, "TRACKING.MAX_COST", 0.6,
        "TRACKING.MIN_HITS", 5, "TRACKING.MAX_MISSES", 7, "TRACKING.MIN_SCORE", 0.25,
        "TRACKING.KEYPOINT_THRESHOLD", 0.2, "TRACKING.SMOOTHING.MIN_CUTOFF", 2.0,
        "TRACKING.SMOOTHING.BETA", 0.5, "TRACKING.SMOOTHING.D_CUTOFF", 3.0,
        "TRACKING.ACTIVITY_WINDOW_SECONDS", 2.0,
    ])  # fmt: skip
    tracker = PoseTracker(cfg, fps=10)
    assert (tracker.iou_weight, tracker.oks_weight) == (0.25, 0.75)  # normalised
    assert (tracker.max_cost, tracker.min_hits, tracker.max_misses) == (0.6, 5, 7)
    assert (tracker.min_score, tracker.keypoint_threshold) == (0.25, 0.2)
    s = tracker.smoother
    assert (s.min_cutoff, s.beta, s.d_cutoff, s.keypoint_threshold) == (2.0, 0.5, 3.0, 0.2)
    assert tracker.activity.window == 20  # 2 s at 10 fps
    assert PoseTracker(cfg, min_hits=2).min_hits == 2  # keywords override the config
    assert PoseTracker().max_misses == get_cfg().TRACKING.MAX_MISSES
    np.testing.assert_array_equal(PoseTracker().oks_sigmas, COCO_PERSON_OKS_SIGMAS)
    assert PoseTracker(cfg, oks_sigmas=[0.05] * 13).num_keypoints == 13  # another keypoint set


def test_activity_is_window_averaged_per_track():
    tracker = PoseTracker(min_hits=1, fps=4.0, activity_window_seconds=0.5)  # 2 frames
    box = np.array([[100.0, 100.0, 160.0, 260.0]])
    kps = pose_in(box[0])[None]
    for probs in ([1.0, 0.0, 0.0], [0.0, 0.2, 0.8], [0.0, 0.4, 0.6]):
        tracker.update(box, np.array([0.9]), kps, activity_scores=np.array([probs]))
    track = tracker.get(1)
    np.testing.assert_allclose(track.activity_probs, [0.0, 0.3, 0.7])
    assert track.activity_label == 2


# ---- matching --------------------------------------------------------------------------------
def test_matching_cost_and_gated_assignment():
    box = np.array([[0.0, 0.0, 50.0, 100.0]])
    kps = pose_in(box[0])[None]
    assert matching_cost(box, kps, box, kps, COCO_PERSON_OKS_SIGMAS, 1, 1, 0.1)[0, 0] == 0
    far = box + 200
    assert matching_cost(box, kps, far, pose_in(far[0])[None], COCO_PERSON_OKS_SIGMAS, 2, 2,
                         0.1)[0, 0] == pytest.approx(1.0)
    oks, has = keypoint_oks(kps, np.zeros((1, 17, 3)), [5000.0], COCO_PERSON_OKS_SIGMAS, 0.1)
    assert not has[0, 0] and oks[0, 0] == 0  # no keypoint scored in both: no OKS
    cost = np.array([[0.1, 0.9], [0.2, 0.95]])
    matches, rows, cols = assign(cost, max_cost=0.5)
    assert matches.tolist() == [[0, 0]] and rows.tolist() == [1] and cols.tolist() == [1]


# ---- One-Euro smoothing ----------------------------------------------------------------------
def smoothing_defaults() -> dict:
    s = get_cfg().TRACKING.SMOOTHING
    return dict(min_cutoff=s.MIN_CUTOFF, beta=s.BETA, d_cutoff=s.D_CUTOFF)


def mean_acceleration(x: np.ndarray) -> float:
    return float(np.abs(np.diff(x, n=2, axis=0)).mean())


def test_one_euro_lowers_jitter_of_a_noisy_track():
    rng = np.random.default_rng(0)
    t = np.arange(100) / FPS
    truth = np.stack([100 + 40 * t, 200 + 10 * t], axis=1)  # 40 and 10 px/s
    noisy = truth + rng.normal(0, 3.0, truth.shape)
    filt = OneEuroFilter(**smoothing_defaults())
    smooth = np.stack([filt(x, ti) for x, ti in zip(noisy, t)])
    assert mean_acceleration(smooth) < 0.5 * mean_acceleration(noisy)
    # and stays close to the truth (the lag of a slow walk is small)
    assert np.abs(smooth[20:] - truth[20:]).mean() < np.abs(noisy - truth).mean()


def test_one_euro_beta_follows_a_fast_step():
    t = np.arange(40) / FPS
    x = np.where(np.arange(40) < 20, 100.0, 300.0)  # a 200 px jump at frame 20

    def run(beta):
        filt = OneEuroFilter(**dict(smoothing_defaults(), beta=beta))
        return np.array([filt(np.array([v]), ti)[0] for v, ti in zip(x, t)])

    fast, slow = run(smoothing_defaults()["beta"]), run(0.0)
    assert abs(fast[22] - 300.0) < 0.1 * 200  # within 10 % of the step two frames after it
    assert abs(slow[22] - 300.0) > 0.5 * 200  # without beta it lags far behind


def test_keypoint_smoother_low_scores_pass_through_and_reset():
    smoother = KeypointSmoother(min_cutoff=1.0, beta=0.0, keypoint_threshold=0.5)
    kps = np.concatenate([np.full((17, 2), 10.0), np.ones((17, 1))], axis=1)
    smoother.smooth(7, kps, 0.0)
    moved = kps.copy()
    moved[:, :2] = 20.0
    moved[3, 2] = 0.1  # keypoint 3 not confident: passed through
    out = smoother.smooth(7, moved, 0.04)
    assert np.all(out[np.arange(17) != 3, :2] < 15.0) and np.all(out[3, :2] == 20.0)
    moved[:, 2] = 1.0
    moved[:, :2] = 30.0
    out = smoother.smooth(7, moved, 0.08)
    np.testing.assert_array_equal(out[3, :2], 30.0)  # keypoint 3 restarted at its sample
    assert np.all(out[0, :2] < 30.0)
    smoother.forget([7, 99])
    assert smoother.track_ids == []
    np.testing.assert_array_equal(smoother.smooth(7, moved, 0.12), moved)  # a new track


# ---- windowed activity -----------------------------------------------------------------------
@pytest.mark.parametrize("seconds, fps, frames", [(0.5, 10.0, 5), (1.0, 30.0, 30), (0.01, 25, 1)])
def test_window_length_from_fps(seconds, fps, frames):
    act = WindowedActivity(seconds, fps)
    assert act.window == frames
    probs = np.eye(frames + 2, 3)[:, ::-1] + np.arange(frames + 2)[:, None]  # distinct rows
    for p in probs:
        mean, label = act.update(3, p)
    np.testing.assert_allclose(mean, probs[-frames:].mean(axis=0))
    assert label == int(np.argmax(mean))
    act.forget([3])
    assert act.get(3) is None and act.track_ids == []


# ---- bad input -------------------------------------------------------------------------------
def test_bad_input_is_a_value_error_naming_the_argument():
    tracker = PoseTracker(fps=FPS)
    boxes = np.array([[0.0, 0.0, 10.0, 20.0]])
    kps = np.ones((1, 17, 3))
    with pytest.raises(ValueError, match="boxes: expected shape"):
        tracker.update(np.ones((1, 5)), [0.9], kps)
    with pytest.raises(ValueError, match="scores: expected shape"):
        tracker.update(boxes, [0.9, 0.8], kps)
    with pytest.raises(ValueError, match=r"keypoints: expected shape \(1, 17, 3\)"):
        tracker.update(boxes, [0.9], np.ones((1, 13, 3)))  # K differs from the sigmas'
    with pytest.raises(ValueError, match="activity_scores: expected shape"):
        tracker.update(boxes, [0.9], kps, activity_scores=np.ones(4))
    with pytest.raises(ValueError, match="boxes: contains NaN"):
        tracker.update(np.full((1, 4), np.nan), [0.9], kps)
    with pytest.raises(ValueError, match="oks_sigmas"):
        PoseTracker(oks_sigmas=[])
    tracker.update(boxes, [0.9], kps, activity_scores=[[0.2, 0.8]], timestamp=1.0)
    with pytest.raises(ValueError, match="activity_scores: 3 classes, earlier frames had 2"):
        tracker.update(boxes, [0.9], kps, activity_scores=[[0.2, 0.3, 0.5]], timestamp=2.0)
    assert tracker.frame_index == 1  # a refused frame changes nothing
    with pytest.raises(ValueError, match="timestamp"):
        tracker.update(boxes, [0.9], kps, timestamp=1.0)
    assert tracker.update([], [], [], timestamp=3.0).shape == (0,)  # an empty frame
    smoother = KeypointSmoother()
    smoother.smooth(1, np.ones((17, 3)), 0.0)
    with pytest.raises(ValueError, match="keypoints: 13 keypoints for track 1"):
        smoother.smooth(1, np.ones((13, 3)), 0.1)
    with pytest.raises(ValueError, match="keypoints: expected shape"):
        smoother.smooth(2, np.ones((17, 2)), 0.1)
    act = WindowedActivity(1.0, 25)
    act.update(1, [0.5, 0.5])
    with pytest.raises(ValueError, match="probs: 3 classes"):
        act.update(1, [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="window_seconds"):
        WindowedActivity(0.0, 25)
    with pytest.raises(ValueError, match="beta"):
        OneEuroFilter(beta=-1.0)
