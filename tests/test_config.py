"""Config system: every shipped yaml merges and builds; typos are refused by name."""
import os
from pathlib import Path

import pytest
import torch

import multitask
from multitask import add_multitask_config, build_model, get_cfg
from multitask.config import defaults as config_defaults

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(REPO_ROOT.glob("configs/**/*.yaml"))


pytestmark = pytest.mark.usefixtures("one_thread")


def _config_id(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT / "configs"))


def test_config_files_found():
    # guards the parametrisation below against a silently empty glob
    assert len(CONFIG_FILES) >= 5, CONFIG_FILES


@pytest.mark.parametrize("config_file", CONFIG_FILES, ids=_config_id)
def test_config_file_merges_and_builds(config_file, tmp_path):
    cfg = get_cfg()
    cfg.merge_from_file(str(config_file))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    if cfg.MODEL.ACTIVITY.WEIGHTS:
        # a config naming the activity weights a command makes (the COCO chain): made here
        from multitask.modeling.postprocessing.activity import (
            ActivityClassifier,
            save_activity_weights,
        )

        clf = ActivityClassifier(cfg, weights="")
        path = str(tmp_path / "activity_classifier.pth")
        save_activity_weights(path, clf.mlp, clf.classes, clf.input_layout(), clf.hidden_dims,
                              clf.dropout_p)
        cfg.MODEL.ACTIVITY.WEIGHTS = path
    torch.manual_seed(0)
    model = build_model(cfg)
    assert isinstance(model, torch.nn.Module)
    assert next(model.parameters()).device.type == "cpu"
    # what the yaml asks for is what was built
    assert model.mask_on == cfg.MODEL.MASK_ON
    assert model.keypoint_on == cfg.MODEL.KEYPOINT_ON
    assert model.roi_heads.has_keypoint() == cfg.MODEL.KEYPOINT_ON
    assert model.roi_heads.has_mask() == cfg.MODEL.MASK_ON
    n_deform_backbone = sum(
        1 for n, _ in model.backbone.named_modules() if n.endswith("conv2.conv_offset")
    )
    assert (n_deform_backbone > 0) == any(cfg.MODEL.RESNETS.DEFORM_ON_PER_STAGE)
    if cfg.MODEL.KEYPOINT_ON:
        head = model.roi_heads.keypoint_head
        has_deform_head = any(n.endswith("conv_offset") for n, _ in head.named_modules())
        assert has_deform_head == cfg.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON


def test_shipped_configs_values():
    base = REPO_ROOT / "configs" / "COCO-MultiTask"
    full = get_cfg()
    full.merge_from_file(str(base / "multitask_R_50_FPN_1x_dconv_c3-c5_dconv_head.yaml"))
    assert list(full.MODEL.RESNETS.DEFORM_ON_PER_STAGE) == [False, True, True, True]
    assert full.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON is True
    assert full.MODEL.MASK_ON is True
    assert full.SOLVER.BASE_LR == pytest.approx(0.03)  # from the base file
    kp_only = get_cfg()
    kp_only.merge_from_file(str(base / "keypoint_R_50_FPN_1x_dconv_c3-c5_dconv_head.yaml"))
    assert kp_only.MODEL.MASK_ON is False  # two levels of _BASE_
    assert kp_only.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON is True


def test_yaml_typo_refused_naming_key_and_file(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text("MODEL:\n  RESNETS:\n    DEPHT: 101\n")
    cfg = get_cfg()
    with pytest.raises(KeyError) as excinfo:
        cfg.merge_from_file(str(bad))
    msg = str(excinfo.value)
    assert "MODEL.RESNETS.DEPHT" in msg
    assert "typo.yaml" in msg


def test_yaml_typo_in_base_file_refused(tmp_path):
    (tmp_path / "base.yaml").write_text("MODEL:\n  KEYPONT_ON: False\n")
    (tmp_path / "leaf.yaml").write_text('_BASE_: "base.yaml"\nMODEL:\n  MASK_ON: False\n')
    with pytest.raises(KeyError) as excinfo:
        get_cfg().merge_from_file(str(tmp_path / "leaf.yaml"))
    assert "MODEL.KEYPONT_ON" in str(excinfo.value)


def test_yaml_unknown_top_level_section_refused(tmp_path):
    bad = tmp_path / "section.yaml"
    bad.write_text("SOLVR:\n  BASE_LR: 0.1\n")
    with pytest.raises(KeyError) as excinfo:
        get_cfg().merge_from_file(str(bad))
    assert "SOLVR" in str(excinfo.value)


@pytest.mark.parametrize(
    "overrides, bad_key",
    [
        (["MODEL.RESNETS.DEPHT", "101"], "MODEL.RESNETS.DEPHT"),
        (["MODEL.RESNETZ.DEPTH", "101"], "MODEL.RESNETZ.DEPTH"),
        (["SOLVER.BASE_LR", "0.1", "MODEL.MASK_ONN", "False"], "MODEL.MASK_ONN"),
        (["MODEL.DEVICE.TYPE", "cpu"], "MODEL.DEVICE.TYPE"),  # descends into a leaf
    ],
)
def test_override_typo_refused_naming_key(overrides, bad_key):
    cfg = get_cfg()
    with pytest.raises(KeyError) as excinfo:
        cfg.merge_from_list(overrides)
    assert bad_key in str(excinfo.value)


def test_override_valid_keys_applied():
    cfg = get_cfg()
    cfg.merge_from_list(
        ["MODEL.RESNETS.DEPTH", "101", "MODEL.ROI_KEYPOINT_HEAD.LOSS_TYPE", "gaussian_mse"]
    )
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.LOSS_TYPE == "gaussian_mse"


def test_override_odd_length_refused():
    cfg = get_cfg()
    with pytest.raises(ValueError, match="odd"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "101", "MODEL.MASK_ON"])
    assert cfg.MODEL.RESNETS.DEPTH == 50


def test_base_resolves_relative_to_file(tmp_path, monkeypatch):
    (tmp_path / "bases").mkdir()
    (tmp_path / "leaves" / "deep").mkdir(parents=True)
    (tmp_path / "bases" / "base.yaml").write_text(
        "MODEL:\n  RESNETS:\n    DEPTH: 101\n  MASK_ON: False\nSOLVER:\n  BASE_LR: 0.5\n"
    )
    (tmp_path / "leaves" / "deep" / "leaf.yaml").write_text(
        '_BASE_: "../../bases/base.yaml"\nSOLVER:\n  BASE_LR: 0.25\n'
    )
    # a cwd from which the relative _BASE_ path would not resolve
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = get_cfg()
    cfg.merge_from_file(str(tmp_path / "leaves" / "deep" / "leaf.yaml"))
    assert cfg.MODEL.RESNETS.DEPTH == 101  # from the base
    assert cfg.MODEL.MASK_ON is False  # from the base
    assert cfg.SOLVER.BASE_LR == pytest.approx(0.25)  # the leaf wins
    assert os.getcwd() == str(elsewhere)


def test_get_cfg_returns_independent_copies():
    a = get_cfg()
    b = get_cfg()
    assert a is not b
    a.MODEL.RESNETS.DEPTH = 18
    a.MODEL.RESNETS.OUT_FEATURES.append("res6")
    a.MODEL.PRN.HIDDEN_DIM = 7
    a.MODEL.POSTPROCESSORS.append("ActivityClassifier")
    assert b.MODEL.RESNETS.DEPTH == 50
    assert list(b.MODEL.RESNETS.OUT_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert b.MODEL.PRN.HIDDEN_DIM == 1024
    assert list(b.MODEL.POSTPROCESSORS) == []
    c = get_cfg()
    assert c.MODEL.RESNETS.DEPTH == 50 and c.MODEL.PRN.HIDDEN_DIM == 1024


def test_add_multitask_config_does_not_touch_global_defaults():
    get_cfg()
    get_cfg()
    # the module-level defaults only hold the detectron2 keys
    assert "PRN" not in config_defaults._C.MODEL
    assert "ACTIVITY" not in config_defaults._C.MODEL
    assert "DEFORM_ON" not in config_defaults._C.MODEL.ROI_KEYPOINT_HEAD
    # add_multitask_config works on a given node only
    node = config_defaults._C.clone()
    add_multitask_config(node)
    assert "PRN" in node.MODEL and "PRN" not in config_defaults._C.MODEL
    assert "OFFSET_REFINEMENT" in node.MODEL.ROI_KEYPOINT_HEAD


def test_get_cfg_exported():
    assert multitask.get_cfg is get_cfg
    cfg = get_cfg()
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT is True
    assert cfg.MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE == 56


def test_configurable_parts_take_cfg_kwargs_or_the_default_config():
    """One construction idiom: from_config(cfg) gives every argument; keywords override it; no
    cfg means the default config, the one source of defaults."""
    from multitask.data import DatasetMapper
    from multitask.modeling.postprocessing import ActivityClassifier, PoseResidualNetwork

    cfg = get_cfg()
    cfg.MODEL.PRN.HEATMAP_SIZE = [14, 9]
    cfg.MODEL.PRN.HIDDEN_DIM = 8
    prn = PoseResidualNetwork(cfg)
    assert prn.heatmap_size == (14, 9) and prn.fc1.out_features == 8
    assert PoseResidualNetwork(cfg, hidden_dim=4).fc1.out_features == 4
    bare = PoseResidualNetwork(heatmap_size=(14, 9), hidden_dim=8)
    defaults = get_cfg().MODEL.PRN
    assert bare.margin == defaults.BOX_MARGIN and bare.min_confidence == defaults.MIN_CONFIDENCE
    with pytest.raises(TypeError, match=r"unexpected arguments \['hidden'\]"):
        PoseResidualNetwork(cfg, hidden=8)
    clf = ActivityClassifier(classes=["a", "b"], hidden_dims=[8])
    assert clf.dropout_p == get_cfg().MODEL.ACTIVITY.DROPOUT and clf.weights_source == ""
    # from_config's own arguments, by position or by name
    assert DatasetMapper(cfg, False).is_train is False
    assert DatasetMapper(cfg, is_train=False).is_train is False
    assert DatasetMapper(is_train=False, augmentations=[]).augmentations == []
