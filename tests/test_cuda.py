"""CUDA checks of the whole model: the same values as on the CPU, mixed-precision training steps,
post-processors on the GPU, checkpoints that move between devices.

Skipped without CUDA; ``dev/gpu_check.sh`` runs them (``-m cuda``) with the GPU benchmark.
Convolutions run without TF32 here, so CPU and GPU agree to float32 rounding.
"""

import copy

import pytest
import torch
import torchvision
from tiny_model import TINY_MODEL

from multitask import Instances, build_model, get_cfg
from multitask.engine.checkpoint import MultiTaskCheckpointer
from multitask.engine.trainer import amp_dtype
from multitask.modeling.layers.roi_align_fast import roi_align_auto

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

H, W = 128, 160
FULL = TINY_MODEL + [
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE", [False, True, True, True],
    "MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON", True,
    "MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT", True,
    "MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE", 8,
    "MODEL.PRN.HIDDEN_DIM", 64,
    "MODEL.PRN.HEATMAP_SIZE", [28, 18],
    "MODEL.ACTIVITY.HIDDEN_DIMS", [64, 16],
]  # fmt: skip
BOXES = torch.tensor([[12.0, 10.0, 70.0, 118.0], [80.0, 20.0, 150.0, 124.0]])


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _model(*extra, device="cuda", seed=0):
    cfg = get_cfg()
    cfg.merge_from_list(FULL + ["MODEL.DEVICE", device] + list(extra))
    torch.manual_seed(seed)
    return build_model(cfg)


def _image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, H, W), generator=g, dtype=torch.uint8)


def _people():
    n, k = len(BOXES), 17
    g = torch.Generator().manual_seed(1)
    masks = torch.zeros(n, H, W, dtype=torch.uint8)
    kps = torch.zeros(n, k, 3)
    for i, (x0, y0, x1, y1) in enumerate(BOXES.tolist()):
        masks[i, int(y0):int(y1), int(x0):int(x1)] = 1
        kps[i, :, 0] = x0 + torch.rand(k, generator=g) * (x1 - x0)
        kps[i, :, 1] = y0 + torch.rand(k, generator=g) * (y1 - y0)
        kps[i, :, 2] = 2.0
    return Instances((H, W), gt_boxes=BOXES.clone(), gt_classes=torch.zeros(n, dtype=torch.int64),
                     gt_masks=masks, gt_keypoints=kps)


def test_full_model_cuda_equals_cpu():
    """Backbone features (deformable res3-res5), mask probabilities and offset-refined keypoint
    heatmaps on given boxes: CUDA (torchvision's kernels) vs CPU (our fast kernels)."""
    cpu = _model(device="cpu").eval()
    gpu = copy.deepcopy(cpu).cuda()
    x = [{"image": _image()}]
    with torch.no_grad():
        outs = []
        for m in (cpu, gpu):
            images = m.preprocess_image(x)
            feats = m.backbone(images.tensors)
            boxes = [BOXES.to(m.device)]
            heat = m.roi_heads._forward_keypoint(feats, boxes, images.image_sizes)
            mask = m.roi_heads._forward_mask(feats, boxes, images.image_sizes)
            outs.append(({k: v.cpu() for k, v in feats.items()}, heat.cpu(), mask.cpu()))
    (f_cpu, h_cpu, m_cpu), (f_gpu, h_gpu, m_gpu) = outs
    for name in f_cpu:
        torch.testing.assert_close(f_gpu[name], f_cpu[name], rtol=1e-4, atol=1e-4, msg=name)
    torch.testing.assert_close(h_gpu, h_cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(m_gpu, m_cpu, rtol=1e-4, atol=1e-4)


def test_full_chain_inference_cuda():
    """Detector -> PRN -> activity on the GPU: every output on one device, sane shapes."""
    post = ["MODEL.POSTPROCESSORS", ["PoseResidualNetwork", "ActivityClassifier"]]
    model = _model(*post).eval()
    with torch.no_grad():
        out = model([{"image": _image(), "height": 2 * H, "width": 2 * W}])[0]["instances"]
    n = len(out)
    assert n > 0
    assert out.pred_boxes.is_cuda and out.pred_keypoints.is_cuda
    assert out.pred_masks.shape == (n, 2 * H, 2 * W)
    assert out.pred_keypoints.shape == (n, 17, 3)
    assert torch.isfinite(out.pred_keypoints).all()
    assert out.pred_activity.shape == (n,) and out.pred_activity.is_cuda
    assert torch.allclose(out.activity_scores.sum(1), torch.ones(n, device="cuda"))


def test_amp_training_steps_cuda():
    """float16 autocast + GradScaler as ``SOLVER.AMP.ENABLED`` does: finite losses for all
    tasks, parameters move, and the loss goes down on a repeated batch."""
    assert amp_dtype(torch.device("cuda")) == torch.float16
    model = _model().train()
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    batch = [{"image": _image(s), "instances": _people()} for s in (0, 1)]
    totals = []
    for _ in range(8):
        with torch.autocast("cuda", dtype=torch.float16):
            losses = model(batch)
        total = sum(losses.values())
        assert torch.isfinite(total), {k: float(v) for k, v in losses.items()}
        opt.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(opt)
        scaler.update()
        totals.append(float(total.detach()))
    assert {"loss_mask", "loss_keypoint", "loss_classifier", "loss_objectness"} <= set(losses)
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, params))
    assert moved > 0.9 * len(params)
    assert min(totals[-3:]) < totals[0]


def test_roi_align_dispatch_cuda():
    """CUDA tensors go to torchvision's kernel, values and gradients unchanged."""
    torch.manual_seed(0)
    feats = torch.randn(2, 8, 20, 24, device="cuda", requires_grad=True)
    rois = torch.tensor([[0, 1.0, 2.0, 15.5, 18.0], [1, 3.0, 0.5, 22.0, 9.0]], device="cuda")
    ours = roi_align_auto(feats, rois, (7, 7), 0.5, 2, True)
    ref = torchvision.ops.roi_align(feats, rois, (7, 7), 0.5, 2, True)
    torch.testing.assert_close(ours, ref)
    (g_ours,) = torch.autograd.grad(ours.sum(), feats)
    (g_ref,) = torch.autograd.grad(ref.sum(), feats)
    torch.testing.assert_close(g_ours, g_ref)


def test_checkpoint_moves_between_devices(tmp_path):
    """A checkpoint written from the GPU loads into a CPU model (and back) with equal values."""
    gpu = _model(seed=0)
    MultiTaskCheckpointer(gpu, str(tmp_path)).save("model_gpu")
    cpu = _model(device="cpu", seed=1)
    MultiTaskCheckpointer(cpu).load(str(tmp_path / "model_gpu.pth"))
    for (name, a), b in zip(gpu.state_dict().items(), cpu.state_dict().values()):
        assert torch.equal(a.cpu(), b), name
