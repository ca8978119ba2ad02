"""multitask.tracking.temporal_activity and its training: activity from a track's pose sequence.

Poses built here, where single frames cannot tell walking from standing: a walker's feet swing
as ``A sin(phase)`` about the standing pose, and a standing person holds one of the walker's
poses (``A sin(phase0)``, phase0 uniform) with a little sway, so every frame of either class
comes from the same distribution; only the motion differs."""
import numpy as np
import pytest
import torch

from multitask.config import get_cfg
from multitask.engine.activity_training import fit_activity_classifier
from multitask.engine.temporal_activity_training import (
    TrackSequence,
    compare_activity_models,
    fit_temporal_activity,
    gather_windows,
    track_sequences_from_coco,
    window_indices,
)
from multitask.modeling.postprocessing.activity import ActivityClassifier, save_activity_weights
from multitask.modeling.postprocessing.activity_features import keypoints_to_activity_features
from multitask.tracking import PoseTracker, TemporalActivity, TemporalActivityNet

pytestmark = pytest.mark.usefixtures("one_thread")

CLASSES = ["walking", "standing"]
FRAMES, MIN_FRAMES = 16, 6
NUM_FRAMES = 48
FPS = 25.0

# A standing person's 17 COCO keypoints as (u, v) fractions of a 60 x 160 box
POSE_UV = np.array([
    [0.50, 0.08], [0.55, 0.06], [0.45, 0.06], [0.62, 0.08], [0.38, 0.08],
    [0.72, 0.22], [0.28, 0.22], [0.80, 0.38], [0.20, 0.38], [0.82, 0.52], [0.18, 0.52],
    [0.64, 0.55], [0.36, 0.55], [0.66, 0.76], [0.34, 0.76], [0.66, 0.96], [0.34, 0.96],
])  # fmt: skip
# x offset per unit of leg swing: left knee, left ankle (+), right knee, right ankle (-)
LEG_SWING = {13: 0.5, 15: 1.0, 14: -0.5, 16: -1.0}


def person_sequence(label: int, rng: np.random.Generator, start=(100.0, 100.0)):
    """keypoints (NUM_FRAMES, 17, 3) and boxes (NUM_FRAMES, 4) of a walker (label 0) or a
    standing person (label 1); see the module docstring."""
    amp = rng.uniform(25.0, 40.0)
    phase0 = rng.uniform(0.0, 2.0 * np.pi)
    t = np.arange(NUM_FRAMES)
    if label == 0:
        swing = amp * np.sin(phase0 + 2.0 * np.pi * t / rng.uniform(20.0, 30.0))
        dx = rng.uniform(2.0, 4.0) * t  # walks to the right
    else:
        swing = amp * np.sin(phase0) + rng.normal(0.0, 1.0, NUM_FRAMES)
        dx = np.zeros(NUM_FRAMES)
    base = np.array(start) + POSE_UV * np.array([60.0, 160.0])
    xy = np.repeat(base[None], NUM_FRAMES, axis=0)
    xy[..., 0] += dx[:, None]
    for k, w in LEG_SWING.items():
        xy[:, k, 0] += w * swing
    xy += rng.normal(0.0, 1.5, xy.shape)
    kps = np.concatenate([xy, np.full((NUM_FRAMES, 17, 1), 2.0)], axis=2)
    boxes = np.concatenate([xy.min(1) - 5.0, xy.max(1) + 5.0], axis=1)
    return kps.astype(np.float32), boxes.astype(np.float32)


def make_sequences(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    seqs = []
    for i in range(n_per_class):
        for label in (0, 1):
            kps, boxes = person_sequence(label, rng)
            seqs.append(TrackSequence(kps, boxes, np.arange(NUM_FRAMES), label, FPS,
                                      f"synthetic:{label}:{i}"))
    return seqs


def new_temporal(**kw):
    return TemporalActivity(classes=CLASSES, frames=FRAMES, min_frames=MIN_FRAMES, channels=32,
                            **kw)


@pytest.fixture(scope="module")
def trained():
    """(per-frame classifier, temporal model) fitted on the same training sequences."""
    train = make_sequences(12, seed=0)
    classifier = ActivityClassifier(classes=CLASSES, hidden_dims=[64], weights="")
    fit_activity_classifier(classifier, np.concatenate([s.keypoints for s in train]),
                            np.concatenate([s.boxes for s in train]),
                            np.concatenate([np.full(NUM_FRAMES, s.label) for s in train]),
                            epochs=15, seed=0)
    temporal = new_temporal(weights="")
    info = fit_temporal_activity(temporal, train, epochs=15, batch_size=32, seed=0)
    assert info["num_windows"] > 0 and np.isfinite(info["loss"]).all()
    return classifier, temporal


def test_temporal_model_beats_the_per_frame_classifier_on_ambiguous_frames(trained):
    classifier, temporal = trained
    val = make_sequences(6, seed=1)
    res = compare_activity_models(val, classifier, temporal, window_seconds=FRAMES / FPS)
    per_frame, windowed, temp = (res[k]["accuracy"] for k in ("per_frame", "windowed", "temporal"))
    assert per_frame < 0.7 and windowed < 0.7, res  # single frames carry no information
    assert res["temporal"]["accuracy_full_window"] >= 0.95, res
    assert temp >= per_frame + 0.25 and temp >= windowed + 0.25, res
    assert temporal.track_ids == []  # the evaluation's track is forgotten


def test_fit_is_seeded_and_leaves_the_global_random_state_alone():
    train = make_sequences(3, seed=2)
    a, b = new_temporal(weights=""), new_temporal(weights="")
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit_temporal_activity(a, train, epochs=2, seed=5)
    np.testing.assert_array_equal(torch.rand(3), expected)
    fit_temporal_activity(b, train, epochs=2, seed=5)
    for (k, va), vb in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        torch.testing.assert_close(va, vb, msg=k)


def test_weights_reload_into_the_same_predictions(trained, tmp_path):
    _, temporal = trained
    path = str(tmp_path / "temporal.pth")
    temporal.save(path, fps=FPS)
    loaded = new_temporal(weights=path)
    assert loaded.weights_source == path and loaded.fps == FPS
    assert loaded.net.architecture() == temporal.net.architecture()
    seqs = make_sequences(2, seed=3)
    idx, _ = window_indices([NUM_FRAMES] * len(seqs), FRAMES, MIN_FRAMES, stride=5)
    feats = temporal.features(np.concatenate([s.keypoints for s in seqs]),
                              np.concatenate([s.boxes for s in seqs]))
    x, mask = gather_windows(feats, idx)
    np.testing.assert_allclose(loaded.predict_proba(x, mask), temporal.predict_proba(x, mask),
                               atol=1e-6)


def bad_file(tmp_path, trained, name, edit):
    path = str(tmp_path / name)
    trained[1].save(path)
    obj = torch.load(path, weights_only=True)
    edit(obj)
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("name, edit, message", [
    ("classes.pth", lambda o: o.update(classes=["running", "sitting"]), "MODEL.ACTIVITY.CLASSES"),
    ("frames.pth", lambda o: o.update(frames=32), "TRACKING.TEMPORAL_FRAMES is 16; set it to 32"),
    ("geometry.pth", lambda o: o["input_layout"].update(geometry=False),
     "MODEL.ACTIVITY.GEOMETRY"),
    ("keypoints.pth", lambda o: o["input_layout"].update(num_keypoints=13), "num_keypoints=13"),
    ("state.pth", lambda o: o["state_dict"].pop("head.weight"), "missing keys \\['head.weight'"),
    ("arch.pth", lambda o: o["architecture"].update(channels=16), "shape mismatches"),
    ("model.pth", lambda o: o.pop("model"), "not a temporal activity weights file"),
    ("frames_missing.pth", lambda o: o.pop("frames"), "lacks \\['frames'\\]"),
])  # fmt: skip
def test_bad_weights_files_are_refused_naming_key_and_file(trained, tmp_path, name, edit,
                                                           message):
    path = bad_file(tmp_path, trained, name, edit)
    with pytest.raises((ValueError, RuntimeError), match=message) as info:
        new_temporal(weights=path)
    assert "TRACKING.TEMPORAL_WEIGHTS" in str(info.value) and path in str(info.value)


def test_other_files_are_refused_naming_key_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="TRACKING.TEMPORAL_WEIGHTS.*nowhere.pth"):
        new_temporal(weights=str(tmp_path / "nowhere.pth"))
    mlp = ActivityClassifier(classes=CLASSES, hidden_dims=[8], weights="")
    path = str(tmp_path / "activity_classifier.pth")
    save_activity_weights(path, mlp.mlp, CLASSES, mlp.input_layout(), [8], 0.3)
    with pytest.raises(ValueError, match="TRACKING.TEMPORAL_WEIGHTS.*activity_classifier.pth.*"
                                         "activity classifier"):
        new_temporal(weights=path)
    listed = str(tmp_path / "list.pth")
    torch.save([1, 2], listed)
    with pytest.raises(RuntimeError, match="list.pth' holds a list"):
        new_temporal(weights=listed)


def tracker_cfg(path: str):
    cfg = get_cfg()
    cfg.merge_from_list([
        "MODEL.ACTIVITY.CLASSES", CLASSES, "TRACKING.ACTIVITY_MODEL", "temporal",
        "TRACKING.TEMPORAL_WEIGHTS", path, "TRACKING.TEMPORAL_FRAMES", FRAMES,
        "TRACKING.TEMPORAL_MIN_FRAMES", MIN_FRAMES, "TRACKING.MIN_HITS", 1,
        "TRACKING.MAX_MISSES", 2,
    ])  # fmt: skip
    return cfg


def model_probs(net: TemporalActivityNet, kps, boxes) -> np.ndarray:
    """The net's probabilities (C,) for a track's raw frames so far (its last FRAMES)."""
    feats = keypoints_to_activity_features(torch.from_numpy(kps[-FRAMES:]),
                                           torch.from_numpy(boxes[-FRAMES:]), geometry=True)
    return net.predict_proba(feats[None]).numpy()[0]


def test_tracker_with_the_temporal_model_gives_its_probabilities_per_track(trained, tmp_path):
    path = str(tmp_path / "temporal.pth")
    trained[1].save(path, fps=FPS)
    tracker = PoseTracker(tracker_cfg(path), fps=FPS)
    assert tracker.activity_model == "temporal" and tracker.temporal.weights_source == path
    rng = np.random.default_rng(4)
    walker = person_sequence(0, rng, start=(50.0, 50.0))
    stander = person_sequence(1, rng, start=(400.0, 300.0))
    frame_probs = rng.dirichlet([1.0, 1.0], (NUM_FRAMES, 2))
    for f in range(NUM_FRAMES):
        ids = tracker.update(np.stack([walker[1][f], stander[1][f]]), [0.9, 0.9],
                             np.stack([walker[0][f], stander[0][f]]), frame_probs[f])
        assert ids.tolist() == [1, 2]
        for p, (kps, boxes) in enumerate((walker, stander)):
            track = tracker.get(ids[p])
            if f + 1 < MIN_FRAMES:  # too short: the frame's own probabilities
                np.testing.assert_allclose(track.activity_probs, frame_probs[f, p])
            else:
                np.testing.assert_allclose(track.activity_probs,
                                           model_probs(trained[1].net, kps[:f + 1],
                                                       boxes[:f + 1]), atol=1e-5)
            assert track.activity_label == int(np.argmax(track.activity_probs))
    assert [tracker.get(i).activity_label for i in (1, 2)] == [0, 1]
    for f in range(2):  # the walker leaves: deleted at its second miss, its history forgotten
        tracker.update(stander[1][-1:], [0.9], stander[0][-1:], frame_probs[-1, 1:])
    assert tracker.deleted_ids == [1] and len(tracker.temporal.track_ids) == 1


def test_activity_model_config_keys(tmp_path):
    assert PoseTracker().activity_model == "window" and PoseTracker().temporal is None
    cfg = get_cfg()
    cfg.TRACKING.ACTIVITY_MODEL = "lstm"
    with pytest.raises(ValueError, match="TRACKING.ACTIVITY_MODEL must be one of"):
        PoseTracker(cfg)
    cfg.TRACKING.ACTIVITY_MODEL = "temporal"
    with pytest.raises(ValueError, match="TRACKING.TEMPORAL_WEIGHTS is empty"):
        PoseTracker(cfg)
    with pytest.raises(ValueError, match="TRACKING.TEMPORAL_MIN_FRAMES"):
        TemporalActivity(frames=8, min_frames=9)
    temporal = TemporalActivity(classes=CLASSES, frames=FRAMES, min_frames=MIN_FRAMES)
    tracker = PoseTracker(activity_model="temporal", temporal_activity=temporal, min_hits=1)
    box = np.array([[0.0, 0.0, 60.0, 160.0]])
    kps = np.concatenate([POSE_UV * [60.0, 160.0], np.ones((17, 1))], axis=1)[None]
    with pytest.raises(ValueError, match="activity_scores: 3 classes, the temporal"):
        tracker.update(box, [0.9], kps, activity_scores=[[0.2, 0.3, 0.5]])
    tracker.update(box, [0.9], kps)  # no per-frame scores: nothing until MIN_FRAMES frames
    assert tracker.get(1).activity_probs is None and tracker.get(1).activity_label == -1


def test_sequences_from_a_synthetic_clip_and_windows(tmp_path):
    from multitask.data.synthetic import generate_synthetic_clip

    paths = generate_synthetic_clip(str(tmp_path / "clip"), num_frames=12, seed=3,
                                    image_size=(120, 160), min_people=2, max_people=2,
                                    arrival_rate=0.0, min_keypoint_area=0,
                                    activities=["walking", "sitting"])
    seqs = track_sequences_from_coco(paths.annotations, ["walking", "running", "sitting",
                                                         "standing"])
    assert sorted(s.label for s in seqs) == [0, 2]
    for s in seqs:
        assert np.all(np.diff(s.frames) > 0) and s.fps == 25
        assert s.keypoints.shape == (len(s.frames), 17, 3)
        assert np.all(s.boxes[:, 2:] > s.boxes[:, :2])  # XYXY
    idx, seq = window_indices([3, 5], frames=4, min_frames=2, stride=1)
    assert idx.tolist() == [[-1, -1, 0, 1], [-1, 0, 1, 2],
                            [-1, -1, 3, 4], [-1, 3, 4, 5], [3, 4, 5, 6], [4, 5, 6, 7]]
    assert seq.tolist() == [0, 0, 1, 1, 1, 1]
    x, mask = gather_windows(torch.arange(8.0)[:, None] + 1, idx)
    assert x[0, :, 0].tolist() == [0.0, 0.0, 1.0, 2.0]
    assert mask[0].tolist() == [False, False, True, True]


def test_trackers_built_from_the_same_arguments_keep_their_own_track_state(trained, tmp_path):
    path = str(tmp_path / "temporal.pth")
    trained[1].save(path)
    args = PoseTracker.from_config(tracker_cfg(path), fps=FPS)
    a, b = PoseTracker(**args), PoseTracker(**args)
    assert a.temporal.net is b.temporal.net  # one network, read only
    kps, boxes = person_sequence(0, np.random.default_rng(5))
    for f in range(3):
        a.update(boxes[f:f + 1], [0.9], kps[f:f + 1])
    assert a.temporal.track_ids == [0] and b.temporal.track_ids == []
