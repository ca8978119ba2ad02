"""Pose Residual Network: encoding/decoding, training on a toy scene, post-processor, weights."""

import os

import pytest
import torch

from multitask.config import get_cfg
from multitask.modeling.postprocessing import POSTPROCESSOR_REGISTRY, build_postprocessors
from multitask.modeling.postprocessing.prn import PoseResidualNetwork, prn_loss
from multitask.modeling.postprocessing.prn_codec import (
    decode_prn_output,
    encode_prn_input,
    encode_prn_inputs,
    enlarge_boxes,
)
from multitask.structures import Instances

HS = (28, 18)  # small heatmaps keep the tests fast

# canonical standing person in a unit box (x right, y down), COCO keypoint order
TEMPLATE = torch.tensor(
    [
        [0.50, 0.08],
        [0.53, 0.06],
        [0.47, 0.06],
        [0.57, 0.08],
        [0.43, 0.08],
        [0.68, 0.22],
        [0.32, 0.22],
        [0.78, 0.38],
        [0.22, 0.38],
        [0.82, 0.52],
        [0.18, 0.52],
        [0.62, 0.55],
        [0.38, 0.55],
        [0.63, 0.75],
        [0.37, 0.75],
        [0.64, 0.95],
        [0.36, 0.95],
    ]
)


def _person(g, x0, y0, w, h):
    xy = TEMPLATE + torch.randn(17, 2, generator=g) * 0.03
    kp = torch.zeros(17, 3)
    kp[:, 0] = x0 + xy[:, 0] * w
    kp[:, 1] = y0 + xy[:, 1] * h
    kp[:, 2] = (torch.rand(17, generator=g) > 0.1).float() * 2
    return kp, torch.tensor([x0, y0, x0 + w, y0 + h])


def toy_scene(g):
    """Two overlapping people: keypoints (2, 17, 3) and boxes (2, 4)."""
    w = 60 + 40 * torch.rand(1, generator=g).item()
    h = 1.8 * w
    a, ba = _person(g, 50.0, 40.0, w, h)
    side = 1 if torch.rand(1, generator=g).item() < 0.5 else -1
    dx = (0.25 + 0.35 * torch.rand(1, generator=g).item()) * w * side
    dy = (torch.rand(1, generator=g).item() - 0.5) * 0.2 * h
    b, bb = _person(g, 50.0 + dx, 40.0 + dy, w * (0.9 + 0.2 * torch.rand(1, generator=g).item()), h)
    return torch.stack([a, b]), torch.stack([ba, bb])


def baseline_assign(boxes, kps, margin=0.1):
    """Per box and type, the candidate inside the enlarged box nearest the box centre."""
    ext = enlarge_boxes(boxes, margin)
    out = []
    for bx, e in zip(boxes, ext):
        cx, cy = (bx[0] + bx[2]) / 2, (bx[1] + bx[3]) / 2
        d = (kps[..., 0] - cx) ** 2 + (kps[..., 1] - cy) ** 2
        inside = (
            (kps[..., 0] >= e[0])
            & (kps[..., 0] <= e[2])
            & (kps[..., 1] >= e[1])
            & (kps[..., 1] <= e[3])
            & (kps[..., 2] > 0)
        )
        d = torch.where(inside, d, torch.full_like(d, float("inf")))
        out.append(kps[d.argmin(0), torch.arange(17), :2])
    return torch.stack(out)


def fraction_correct(pred_xy, kps):
    ok = (pred_xy[..., :2] - kps[..., :2]).norm(dim=-1) < 1e-3
    return ok[kps[..., 2] > 0].float().mean().item()


def test_lone_keypoint_round_trip():
    box = torch.tensor([100.0, 50.0, 190.0, 230.0])
    margin = 0.1
    ext = enlarge_boxes(box[None], margin)[0]
    cw = (ext[2] - ext[0]) / HS[1]
    ch = (ext[3] - ext[1]) / HS[0]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        kps = torch.zeros(1, 17, 3)
        j = int(torch.randint(17, (1,), generator=g))
        x = ext[0] + torch.rand(1, generator=g).item() * (ext[2] - ext[0])
        y = ext[1] + torch.rand(1, generator=g).item() * (ext[3] - ext[1])
        kps[0, j] = torch.tensor([x, y, 2.0])
        hm = encode_prn_input(kps, box, HS, margin=margin, sigma=1.0)
        assert hm.shape == (17, *HS)
        assert hm.amax() == pytest.approx(hm[j].amax().item())
        assert hm[j].amax() > 0.6  # a peak close to 1
        others = torch.cat([hm[:j], hm[j + 1 :]])
        assert others.abs().sum() == 0
        dec = decode_prn_output(hm[None], box[None], margin=margin)[0, j]
        assert abs(dec[0] - x) <= 0.5 * cw + 1e-3
        assert abs(dec[1] - y) <= 0.5 * ch + 1e-3


def test_encode_batched_matches_single_and_skips_outside_and_invisible():
    g = torch.Generator().manual_seed(1)
    kps, boxes = toy_scene(g)
    kps[1, 3, 2] = 0  # invisible: not drawn
    batched = encode_prn_inputs(boxes, kps, HS)
    for r in range(2):
        assert torch.allclose(batched[r], encode_prn_input(kps, boxes[r], HS))
    single = encode_prn_inputs(boxes[:1], kps[1:2, 3:4].expand(1, 17, 3).clone(), HS)
    assert single.sum() == 0
    far = kps.clone()
    far[..., 0] += 10_000  # everything outside every box
    assert encode_prn_inputs(boxes, far, HS).sum() == 0
    assert encode_prn_inputs(boxes[:0], kps, HS).shape == (0, 17, *HS)
    assert encode_prn_inputs(boxes, kps[:0], HS).sum() == 0


def test_prn_shapes_and_loss():
    net = PoseResidualNetwork(heatmap_size=HS, hidden_dim=32, dropout=0.5)
    x = torch.rand(3, 17, *HS)
    logits = net.forward_logits(x)
    assert logits.shape == x.shape
    p = net.predict(x)
    assert torch.allclose(p.reshape(3, 17, -1).sum(2), torch.ones(3, 17), atol=1e-5)
    target = torch.zeros_like(x)
    target[:, :, 3, 4] = 1.0
    for kind in ("bce", "ce"):
        loss = prn_loss(net.forward_logits(x), target, kind=kind)
        assert torch.isfinite(loss) and loss > 0
        loss.backward()
    # a sharp correct prediction has a lower loss than a flat one
    sharp = torch.zeros_like(x)
    sharp[:, :, 3, 4] = 20.0
    assert prn_loss(sharp, target) < prn_loss(torch.zeros_like(x), target)
    # channels without a target keypoint do not count
    assert prn_loss(logits, torch.zeros_like(x)) == 0


def test_trained_prn_beats_baseline_on_toy_scene():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = PoseResidualNetwork(heatmap_size=HS, hidden_dim=128, dropout=0.0, min_confidence=0.0)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        for _ in range(60):
            xs, ys = [], []
            for _ in range(16):
                kps, boxes = toy_scene(g)
                xs.append(encode_prn_inputs(boxes, kps, HS))
                ys.append(
                    torch.cat(
                        [encode_prn_inputs(boxes[i : i + 1], kps[i : i + 1], HS) for i in range(2)]
                    )
                )
            loss = prn_loss(net.forward_logits(torch.cat(xs)), torch.cat(ys))
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(123)
    base, prn = [], []
    for _ in range(40):
        kps, boxes = toy_scene(g)
        base.append(fraction_correct(baseline_assign(boxes, kps), kps))
        out, conf = net.assign(boxes, kps)
        prn.append(fraction_correct(out, kps))
    base, prn = sum(base) / len(base), sum(prn) / len(prn)
    assert prn > base + 0.1, (prn, base)
    assert prn > 0.9, prn


def _cfg(**prn):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.POSTPROCESSORS = ["PoseResidualNetwork"]
    cfg.MODEL.PRN.HEATMAP_SIZE = list(HS)
    cfg.MODEL.PRN.HIDDEN_DIM = 16
    for k, v in prn.items():
        setattr(cfg.MODEL.PRN, k, v)
    return cfg


def _results(n, size=(240, 320)):
    g = torch.Generator().manual_seed(n)
    kps = torch.rand(n, 17, 3, generator=g) * torch.tensor([300.0, 220.0, 1.0])
    x0 = torch.rand(n, generator=g) * 150
    y0 = torch.rand(n, generator=g) * 100
    boxes = torch.stack([x0, y0, x0 + 100, y0 + 120], 1)
    return Instances(
        size,
        pred_boxes=boxes,
        scores=torch.rand(n, generator=g),
        pred_classes=torch.zeros(n, dtype=torch.int64),
        pred_keypoints=kps,
    )


def test_postprocessor_zero_one_many_detections():
    mods = build_postprocessors(_cfg())
    prn = mods["PoseResidualNetwork"]
    prn.eval()
    inputs = [{"height": 240, "width": 320}] * 3
    results = [_results(0), _results(1), _results(4)]
    before = [r.pred_keypoints.clone() for r in results]
    with torch.no_grad():
        out = prn(inputs, results)
    for r, b in zip(out, before):
        assert r.pred_keypoints.shape == b.shape
        assert r.prn_confidence.shape == b.shape[:2]
        # an untrained PRN is never confident: the head's keypoints are kept
        assert torch.equal(r.pred_keypoints, b)
    # with MIN_CONFIDENCE 0 the PRN output is used, the head's score is kept
    prn.min_confidence = 0.0
    r = _results(3)
    s = r.pred_keypoints[..., 2].clone()
    prn(inputs[:1], [r])
    assert torch.equal(r.pred_keypoints[..., 2], s)


def test_registry_unknown_name_lists_known():
    cfg = _cfg()
    cfg.MODEL.POSTPROCESSORS = ["PoseResidualNetwrok"]
    with pytest.raises(KeyError) as e:
        build_postprocessors(cfg)
    msg = str(e.value)
    assert "PoseResidualNetwrok" in msg and "PoseResidualNetwork" in msg
    assert "ActivityClassifier" in msg
    assert POSTPROCESSOR_REGISTRY.get("PoseResidualNetwork") is PoseResidualNetwork


def test_weights_missing_and_mismatched(tmp_path):
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        PoseResidualNetwork(_cfg(WEIGHTS=missing))
    net = PoseResidualNetwork(heatmap_size=HS, hidden_dim=16)
    good = str(tmp_path / "prn.pth")
    net.save(good)
    loaded = PoseResidualNetwork(_cfg(WEIGHTS=good))
    assert torch.equal(loaded.fc1.weight, net.fc1.weight)
    wrong = str(tmp_path / "prn_hidden8.pth")
    PoseResidualNetwork(heatmap_size=HS, hidden_dim=8).save(wrong)
    # a file that records its layout is refused naming the key to change
    with pytest.raises(ValueError, match="prn_hidden8.pth.*hidden_dim 8.*MODEL.PRN.HIDDEN_DIM"):
        PoseResidualNetwork(_cfg(WEIGHTS=wrong))
    # a bare state dict by its shapes
    torch.save(PoseResidualNetwork(heatmap_size=HS, hidden_dim=8).state_dict(), wrong)
    with pytest.raises(RuntimeError, match="prn_hidden8.pth") as e:
        PoseResidualNetwork(_cfg(WEIGHTS=wrong))
    assert "shape" in str(e.value)
    bad_keys = str(tmp_path / "prn_keys.pth")
    torch.save({"fc1.weight": net.fc1.weight, "extra": torch.zeros(1)}, bad_keys)
    with pytest.raises(RuntimeError, match="prn_keys.pth") as e:
        PoseResidualNetwork(_cfg(WEIGHTS=bad_keys))
    assert "missing" in str(e.value) and "extra" in str(e.value)
    assert os.path.exists(good)


def test_snap_uses_candidates_inside_the_box_and_own_keypoints():
    from multitask.modeling.postprocessing.prn_codec import snap_to_candidates

    box = torch.tensor([[0.0, 0.0, 36.0, 56.0]])
    dec = torch.zeros(1, 17, 3)
    dec[0, :, :2] = torch.tensor([10.0, 10.0])
    cand = torch.zeros(2, 17, 3)
    cand[0, :, :] = torch.tensor([12.0, 12.0, 2.0])  # inside: used
    cand[1, :, :] = torch.tensor([100.0, 10.0, 2.0])  # outside the enlarged box: ignored
    cand[0, 4, 2] = 0  # invisible: ignored
    xy, idx = snap_to_candidates(dec, box, cand, HS, margin=0.1)
    assert torch.allclose(xy[0, 0], torch.tensor([12.0, 12.0])) and idx[0, 0] == 0
    assert torch.allclose(xy[0, 4], torch.tensor([10.0, 10.0])) and idx[0, 4] == -1
    own = torch.full((1, 17, 3), 2.0)
    own[0, :, :2] = torch.tensor([200.0, 200.0])  # the box's own keypoint counts anywhere
    xy, idx = snap_to_candidates(dec, box, cand, HS, margin=0.1, own_candidates=own)
    assert idx[0, 4] == 2 and torch.allclose(xy[0, 4], torch.tensor([200.0, 200.0]))
    xy, idx = snap_to_candidates(dec, box, cand, HS, margin=0.1, radius=0.5)
    assert (idx == -1).all()  # (2, 2) px is ~1.2 cells of 2.4 px away: beyond radius 0.5


def test_config_thresholds_and_snap_radius_reach_the_postprocessor():
    """MODEL.PRN.KEYPOINT_THRESHOLD / SOURCE_SCORE_THRESH / SNAP_RADIUS change what the PRN does."""
    default = build_postprocessors(_cfg(MIN_CONFIDENCE=0.0))["PoseResidualNetwork"]
    assert default.snap_radius == float("inf")  # SNAP_RADIUS -1: any distance
    # two overlapping people, keypoint scores 0.5, box scores 0.6 and 0.7
    boxes = torch.tensor([[20.0, 20.0, 120.0, 170.0], [60.0, 30.0, 160.0, 180.0]])
    kps = torch.zeros(2, 17, 3)
    for i, b in enumerate(boxes):
        kps[i, :, 0] = b[0] + TEMPLATE[:, 0] * (b[2] - b[0])
        kps[i, :, 1] = b[1] + TEMPLATE[:, 1] * (b[3] - b[1])
    kps[..., 2] = 0.5
    scores = torch.tensor([0.6, 0.7])

    def snapped(out):  # (R, 17): each output keypoint is one of the detected keypoints of its type
        return (out[:, None, :, :2] - kps[None, :, :, :2]).abs().sum(-1).min(1)[0] < 1e-4

    out, _ = default.assign(boxes, kps, scores)
    assert snapped(out).all()
    # sources above every box score: each box only sees (and snaps to) its own keypoints
    own_only = build_postprocessors(_cfg(MIN_CONFIDENCE=0.0, SOURCE_SCORE_THRESH=0.9))
    out, _ = own_only["PoseResidualNetwork"].assign(boxes, kps, scores)
    assert torch.allclose(out, kps)
    # no snapping: the peak cells' centres, not the detected keypoints
    no_snap = build_postprocessors(_cfg(MIN_CONFIDENCE=0.0, SNAP_RADIUS=0.0))
    prn = no_snap["PoseResidualNetwork"]
    assert prn.snap_radius == 0.0
    out, _ = prn.assign(boxes, kps, scores)
    assert not snapped(out).all()
    # keypoints at or under the threshold are not drawn into the PRN input
    assert default.encode(boxes, kps, own_keypoints=kps).sum() > 0
    strict = build_postprocessors(_cfg(KEYPOINT_THRESHOLD=0.5))["PoseResidualNetwork"]
    assert strict.score_thresh == 0.5
    assert strict.encode(boxes, kps, own_keypoints=kps).sum() == 0


def test_train_prn_and_eval_prn_tools(tmp_path):
    """tools/train_prn.py writes weights that record their layout; tools/eval_prn.py rebuilds the
    PRN from them and scores it against the baseline and the oracle; bad input is named."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from shared_data import COCO_MINI, COCO_MINI_VAL_JSON

    train_json = os.path.join(COCO_MINI, "annotations", "person_keypoints_train2017.json")
    if not os.path.isfile(train_json):
        pytest.skip("coco-mini is not present")
    tools = Path(__file__).resolve().parents[1] / "tools"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    weights = tmp_path / "prn.pth"
    run = [sys.executable, str(tools / "train_prn.py"), "--json", train_json, "--epochs", "1",
           "--heatmap-size", "14", "9", "--hidden", "16", "--variant", "multiposenet",
           "--output", str(weights)]
    proc = subprocess.run(run, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    meta = torch.load(weights, weights_only=True)
    assert meta["variant"] == "multiposenet" and meta["heatmap_size"] == [14, 9]
    out = tmp_path / "eval"
    proc = subprocess.run(
        [sys.executable, str(tools / "eval_prn.py"), "--json", COCO_MINI_VAL_JSON, "--weights",
         str(weights), "--output-dir", str(out)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["oracle"]["all"]["AP"] == pytest.approx(1.0)
    assert 0.0 < metrics["prn"]["all"]["AP"] <= 1.0
    bad = subprocess.run(run[:2] + ["--json", str(tmp_path / "nope.json")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--json: file not found" in bad.stderr


def test_float16_layers_at_inference_keep_the_assignment_and_the_training_weights():
    """MODEL.PRN.INFERENCE_DTYPE float16: the model in eval mode stores the fully connected
    layers in float16 (half the memory), predicts what float32 predicts to ~1e-3, and a model
    that trains gets its exact float32 weights back after an evaluation."""
    from tiny_model import TINY_MODEL

    from multitask.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_list(TINY_MODEL + ["MODEL.POSTPROCESSORS", "['PoseResidualNetwork']",
                                      "MODEL.PRN.HEATMAP_SIZE", "[28, 18]",
                                      "MODEL.PRN.HIDDEN_DIM", "64"])
    torch.manual_seed(0)
    model = build_model(cfg)
    prn = model.postprocessors["PoseResidualNetwork"]
    x = torch.rand(6, 17, 28, 18, generator=torch.Generator().manual_seed(1))
    prn.eval()  # the network alone: float32
    ref = prn.predict(x)
    before = {k: v.clone() for k, v in prn.state_dict().items()}
    model.train()  # a trainer's model ...
    model.eval()  # ... evaluated
    assert prn.fc1.weight.dtype == torch.float16 and prn.fc2.weight.dtype == torch.float16
    half = prn.predict(x)
    assert half.dtype == torch.float32
    assert (half - ref).abs().max() < 2e-3 * ref.abs().max()
    assert torch.equal(half.flatten(2).argmax(2), ref.flatten(2).argmax(2))
    model.train()
    for k, v in prn.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k]), k
    # an inference-only model keeps nothing aside
    torch.manual_seed(0)
    infer = build_model(cfg).eval()
    p = infer.postprocessors["PoseResidualNetwork"]
    assert p.fc1.weight.dtype == torch.float16 and p._float32_state is None
    cfg.MODEL.PRN.INFERENCE_DTYPE = "float32"
    assert build_model(cfg).eval().postprocessors["PoseResidualNetwork"].fc1.weight.dtype \
        == torch.float32
    cfg.MODEL.PRN.INFERENCE_DTYPE = "bfloat8"
    with pytest.raises(ValueError, match="MODEL.PRN.INFERENCE_DTYPE"):
        build_model(cfg)
