"""Export to ONNX / TorchScript: the exported graph against the PyTorch model on coco-mini.

A small model with random weights and everything the export must carry: deformable res3-res5 and
keypoint head (random, non-zero offsets), GroupNorm, ROIAlignV2 poolers, mask head, offset
refinement, and the PRN and activity classifier after the graph.
"""

import os
import stat

import pytest
import torch
from shared_data import COCO_MINI_VAL_IMAGES
from tiny_model import TINY_MODEL, random_deform_offsets

from multitask.config import get_cfg
from multitask.data import read_image
from multitask.engine import DefaultPredictor
from multitask.export import ExportedModel, InferenceCore, backend_for, export_model
from multitask.modeling import build_model

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(not os.path.isdir(COCO_MINI_VAL_IMAGES),
                                reason="coco-mini is not beside the repository")

VAL_IMAGES = sorted(
    os.path.join(COCO_MINI_VAL_IMAGES, f) for f in os.listdir(COCO_MINI_VAL_IMAGES)
)[:3] if os.path.isdir(COCO_MINI_VAL_IMAGES) else []
TOL = 1e-3


def _cfg(*extra):
    cfg = get_cfg()
    cfg.merge_from_list(TINY_MODEL + [
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
        "MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON", "True",
        "MODEL.FPN.NORM", "GN",
        "MODEL.POSTPROCESSORS", "['PoseResidualNetwork', 'ActivityClassifier']",
        "MODEL.PRN.HIDDEN_DIM", "64",
        "MODEL.PRN.HEATMAP_SIZE", "[28, 18]",
        "MODEL.ACTIVITY.HIDDEN_DIMS", "[64, 16]",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.05",
        "INPUT.MIN_SIZE_TEST", "160",
        "INPUT.MAX_SIZE_TEST", "256",
        *extra,
    ])  # fmt: skip
    return cfg


def _model(cfg):
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    random_deform_offsets(model, torch.Generator().manual_seed(1), 0.02)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``{fmt: (cfg, model, paths)}`` for both formats, exported from one model."""
    cfg = _cfg()
    model = _model(cfg)
    out = {}
    for fmt in ("onnx", "torchscript"):
        paths = export_model(cfg, model, str(tmp_path_factory.mktemp(fmt)), fmt)
        out[fmt] = (cfg, model, paths)
    return out


def _exported_cfg(paths):
    cfg = get_cfg()
    cfg.merge_from_file(paths["config"])
    return cfg


def _pytorch_predictor(cfg, model):
    predictor = DefaultPredictor(cfg)
    predictor.model.load_state_dict(model.state_dict())
    return predictor


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_on_coco_mini(exported, fmt, two_threads):
    cfg, model, paths = exported[fmt]
    assert sorted(paths) == ["config", "graph", "meta", "postprocessors"]
    ref_pred = _pytorch_predictor(cfg, model)
    exp_cfg = _exported_cfg(paths)
    assert exp_cfg.MODEL.WEIGHTS == paths["graph"]
    exp_pred = DefaultPredictor(exp_cfg, backend=backend_for(paths["graph"]))
    assert isinstance(exp_pred.model, ExportedModel)
    n_people = 0
    for path in VAL_IMAGES:
        image = read_image(path)
        # the graph's raw outputs on the resized image
        x = ref_pred._to_input(image)
        with torch.no_grad():
            ref = model.inference([x], do_postprocess=False)[0]
        raw = exp_pred.model.runner(x["image"].float())
        assert list(raw) == ["boxes", "scores", "labels", "masks", "keypoints"]
        for key, value in ref.items():
            assert raw[key].shape == value.shape, (path, key)
            assert torch.allclose(raw[key].float(), value.float(), atol=TOL, rtol=0), (path, key)
        # the predictors' final outputs, post-processors included, in the original frame
        a = ref_pred(image)["instances"]
        b = exp_pred(image)["instances"]
        assert len(a) == len(b) > 0
        n_people += len(a)
        for field in ("pred_boxes", "scores", "pred_keypoints", "pred_keypoints_before_prn",
                      "prn_confidence", "activity_scores"):
            assert torch.allclose(a.get(field), b.get(field), atol=TOL, rtol=0), (path, field)
        assert torch.equal(a.pred_activity, b.pred_activity)
        agree = (a.pred_masks == b.pred_masks).float().mean().item()
        assert agree > 0.999, (path, agree)
    assert n_people >= 3


def _all_nodes(graph):
    """The nodes of an ONNX graph and of the subgraphs of its Loop / If nodes."""
    nodes = []
    for node in graph.node:
        nodes.append(node)
        for attr in node.attribute:
            if attr.g.node:
                nodes += _all_nodes(attr.g)
            for sub in attr.graphs:
                nodes += _all_nodes(sub)
    return nodes


def test_onnx_graph_has_deformable_convs(exported):
    import onnx

    nodes = _all_nodes(onnx.load(exported["onnx"][2]["graph"]).graph)
    ops = {n.op_type for n in nodes}
    assert {"DeformConv", "RoiAlign", "NonMaxSuppression", "GridSample"} <= ops
    # every deformable conv of the backbone (res3-res5) and of the keypoint head
    n_deform = sum(n.op_type == "DeformConv" for n in nodes)
    n_model = sum(
        type(m).__name__ == "ModulatedDeformConv2d" for m in exported["onnx"][1].modules()
    )
    assert n_deform == n_model > 2


def test_exported_files_are_readable_as_open_would_make_them(exported):
    mask = os.umask(0)
    os.umask(mask)
    for path in exported["onnx"][2].values():
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask, path


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_graph_handles_images_without_people(exported, fmt, tmp_path):
    """A graph traced with people returns empty outputs when a box head scores nobody above
    the threshold; the predictor then returns an empty Instances with every field."""
    cfg, model, paths = exported[fmt]
    exp_cfg = _exported_cfg(paths)
    predictor = DefaultPredictor(exp_cfg, backend=backend_for(paths["graph"]))
    # silence the person class inside the graph: every score falls under the threshold
    if fmt == "onnx":
        import onnx
        from onnx import numpy_helper

        proto = onnx.load(paths["graph"])
        for init in proto.graph.initializer:
            if init.name.endswith("box_predictor.cls_score.bias"):
                bias = numpy_helper.to_array(init).copy()
                bias[1:] = -50.0
                init.CopyFrom(numpy_helper.from_array(bias, init.name))
                break
        else:
            raise AssertionError("no cls_score bias in the graph")
        sess_path = str(tmp_path / "model.onnx")
        onnx.save(proto, sess_path)
        import onnxruntime as ort

        predictor.model.runner.session = ort.InferenceSession(
            sess_path, providers=["CPUExecutionProvider"]
        )
    else:
        with torch.no_grad():
            predictor.model.runner.module.model.roi_heads.box_predictor.cls_score.bias[1:] = -50
    inst = predictor(read_image(VAL_IMAGES[0]))["instances"]
    assert len(inst) == 0
    assert inst.pred_masks.shape[0] == 0 and inst.pred_keypoints.shape[1:] == (17, 3)
    assert inst.activity_scores.shape[0] == 0


def test_export_traced_without_people_still_finds_them(tmp_path):
    """Tracing an image on which nobody is detected must not bake in the empty case."""
    cfg = _cfg("MODEL.POSTPROCESSORS", "[]")
    model = _model(cfg)
    thresh = model.roi_heads.score_thresh
    model.roi_heads.score_thresh = 2.0  # nobody while tracing
    core = InferenceCore(model)
    image = torch.randint(0, 256, (3, 160, 224)).float()
    with torch.no_grad():
        assert len(core(image)[0]) == 0
    paths = export_model(cfg, model, str(tmp_path), "onnx", sample_size=(160, 224))
    model.roi_heads.score_thresh = thresh
    # the graph keeps the threshold it was traced with; the early exits were not taken
    import onnx

    ops = {n.op_type for n in _all_nodes(onnx.load(paths["graph"]).graph)}
    assert {"GridSample", "ArgMax"} & ops, ops


def test_runtime_refuses_what_does_not_fit(exported, tmp_path):
    cfg, model, paths = exported["onnx"]
    exp_cfg = _exported_cfg(paths)
    with pytest.raises(ValueError, match="extension"):
        backend_for(str(tmp_path / "model.bin"))
    with pytest.raises(FileNotFoundError, match="not found"):
        ExportedModel(exp_cfg, path=str(tmp_path / "missing.onnx"))
    with pytest.raises(ValueError, match="not one for torchscript"):
        ExportedModel(exp_cfg, backend="torchscript")
    other = exp_cfg.clone()
    other.MODEL.POSTPROCESSORS = ["PoseResidualNetwork"]
    with pytest.raises(ValueError, match="differ from the exported model's"):
        ExportedModel(other)
    lonely = tmp_path / "model.onnx"
    lonely.write_bytes(open(paths["graph"], "rb").read())
    with pytest.raises(FileNotFoundError, match="export.json"):
        ExportedModel(exp_cfg, path=str(lonely))
    with pytest.raises(ValueError, match="backend must be one of"):
        DefaultPredictor(exp_cfg, backend="tensorrt")


def test_bicubic_decoder_is_refused_by_name():
    cfg = _cfg("MODEL.ROI_KEYPOINT_HEAD.DECODER", "bicubic", "MODEL.POSTPROCESSORS", "[]")
    with pytest.raises(ValueError, match="DECODER 'subcell'"):
        InferenceCore(build_model(cfg))


def test_export_tool_checks_against_pytorch(tmp_path, capsys):
    """tools/export_model.py exports a checkpoint and --check compares it on coco-mini."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
    import export_model as tool

    from multitask.engine import MultiTaskCheckpointer

    cfg = _cfg("MODEL.POSTPROCESSORS", "['ActivityClassifier']")
    model = _model(cfg)
    ckpt_dir = tmp_path / "ckpt"
    MultiTaskCheckpointer(model, str(ckpt_dir)).save("model_final")
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(cfg.dump())
    out = tmp_path / "export"
    rc = tool.main([
        "--config-file", str(cfg_file), "--output", str(out), "--check", VAL_IMAGES[0],
        "MODEL.WEIGHTS", str(ckpt_dir / "model_final.pth"),
    ])  # fmt: skip
    assert rc == 0
    assert (out / "model.onnx").is_file() and (out / "postprocessors.pth").is_file()
    # an impossible tolerance fails the check
    rc = tool.main([
        "--config-file", str(cfg_file), "--output", str(out), "--check", VAL_IMAGES[0],
        "--tolerance", "-1", "MODEL.WEIGHTS", str(ckpt_dir / "model_final.pth"),
    ])  # fmt: skip
    assert rc == 1
