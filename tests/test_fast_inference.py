"""CPU inference speed-ups that must not change what the model computes: channels-last
inference (``TEST.CHANNELS_LAST``) and FrozenBatchNorm2d folded into the convs of the trunk."""

import pytest
import torch
from tiny_model import TINY_MODEL, random_deform_offsets
from torchvision.ops import FrozenBatchNorm2d

from multitask.config import get_cfg
from multitask.modeling import build_model
from multitask.modeling.backbone import resnet as resnet_module
from multitask.modeling.backbone.resnet import ResNet
from multitask.modeling.roi_heads.poolers import build_pooler


def _random_frozen_stats(module, gen):
    """Random FrozenBatchNorm2d statistics and deformable offsets."""
    random_deform_offsets(module, gen, 0.01)
    for m in module.modules():
        if isinstance(m, FrozenBatchNorm2d):
            n = m.weight.numel()
            m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)


@pytest.mark.parametrize("depth,deform", [(50, False), (18, True)])
def test_folded_frozen_bn_equals_conv_then_norm(depth, deform, one_thread, monkeypatch):
    """Inference folds the norms into the convs: the same values as torchvision's block forwards
    (float rounding); training runs the block forwards whatever the switch says."""
    calls = []
    folded_block = resnet_module._block_folded
    monkeypatch.setattr(resnet_module, "_block_folded",
                        lambda blk, x: calls.append(1) or folded_block(blk, x))
    gen = torch.Generator().manual_seed(0)
    net = ResNet(depth=depth, freeze_at=2, deform_on_per_stage=(False, deform, deform, deform),
                 stride_in_1x1=depth == 50)
    _random_frozen_stats(net, gen)
    x = torch.randn(1, 3, 96, 128, generator=gen)
    net.eval()
    with torch.no_grad():
        folded = net(x)
        assert calls  # the folded path ran
        net.fold_frozen_bn = False
        plain = net(x)
        net.fold_frozen_bn = True
    for k, ref in plain.items():
        assert (folded[k] - ref).abs().max() <= 1e-5 * ref.abs().max(), k
    net.train()
    calls.clear()
    net(x)
    assert not calls


def _model(channels_last: bool):
    cfg = get_cfg()
    cfg.merge_from_list(TINY_MODEL + [
        "MODEL.RESNETS.DEFORM_ON_PER_STAGE", "[False, True, True, True]",
        "MODEL.RESNETS.NORM", "FrozenBN",
        "MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON", "True",
        "TEST.CHANNELS_LAST", str(channels_last),
    ])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(cfg)
    _random_frozen_stats(model, torch.Generator().manual_seed(1))
    return model


def test_channels_last_inference_keeps_the_values_and_the_weights(one_thread):
    ref, cl = _model(False).eval(), _model(True)
    before = {k: v.clone() for k, v in cl.state_dict().items()}
    cl.eval()
    convs = [p for p in cl.backbone.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(p.is_contiguous() for p in ref.parameters())
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8)
    with torch.no_grad():
        a = ref.inference([{"image": image}], do_postprocess=False)[0]
        b = cl.inference([{"image": image}], do_postprocess=False)[0]
    assert len(a["boxes"]) == len(b["boxes"]) > 0
    for key in ("boxes", "scores", "masks", "keypoints"):
        assert torch.allclose(a[key], b[key], atol=1e-3, rtol=0), key
    assert torch.equal(a["labels"], b["labels"])
    # the same state dict in both layouts; training mode is NCHW again
    for k, v in cl.state_dict().items():
        assert torch.equal(v, before[k]), k
    cl.train()
    assert all(p.is_contiguous() for p in cl.parameters())
    fresh = _model(False)
    fresh.load_state_dict(cl.eval().state_dict())
    assert all(p.is_contiguous() for p in fresh.parameters())


def test_pooler_keeps_channels_last_features():
    pooler = build_pooler("ROIAlignV2", ["p2", "p3"], 7, 2, "KEY")
    gen = torch.Generator().manual_seed(0)
    feats = {"p2": torch.randn(1, 8, 32, 40, generator=gen),
             "p3": torch.randn(1, 8, 16, 20, generator=gen)}
    boxes = [torch.tensor([[4.0, 4.0, 60.0, 90.0], [10.0, 20.0, 150.0, 120.0]])]
    ref = pooler(feats, boxes, [(128, 160)])
    cl_feats = {k: v.contiguous(memory_format=torch.channels_last) for k, v in feats.items()}
    out = pooler(cl_feats, boxes, [(128, 160)])
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, ref, atol=1e-6)
