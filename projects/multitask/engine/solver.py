"""Optimizer and LR schedule from ``SOLVER.*`` (warmup + multi-step or cosine)."""

import logging
import math

import torch
from torch import nn

logger = logging.getLogger(__name__)


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over trainable parameters; norm layers use
    ``SOLVER.WEIGHT_DECAY_NORM``; biases and norms get no weight decay only if that is 0."""
    s = cfg.SOLVER
    norm_types = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d)
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for _, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (no_decay if isinstance(module, norm_types) else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.WEIGHT_DECAY}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": s.WEIGHT_DECAY_NORM})
    name = s.OPTIMIZER.upper()
    if name == "SGD":
        return torch.optim.SGD(groups, lr=s.BASE_LR, momentum=s.MOMENTUM, nesterov=s.NESTEROV)
    if name == "ADAMW":
        return torch.optim.AdamW(groups, lr=s.BASE_LR, betas=tuple(s.BETAS))
    raise ValueError(f"SOLVER.OPTIMIZER: unknown optimizer '{s.OPTIMIZER}' (use SGD or AdamW)")


def lr_factor_at(cfg, it: int) -> float:
    """Multiplier of ``SOLVER.BASE_LR`` at iteration ``it`` (0-based)."""
    s = cfg.SOLVER
    name = s.LR_SCHEDULER_NAME
    if name == "WarmupMultiStepLR":
        factor = s.GAMMA ** sum(1 for step in s.STEPS if it >= step)
    elif name == "WarmupCosineLR":
        t = min(it / max(s.MAX_ITER, 1), 1.0)
        end = s.COSINE_END_FACTOR
        factor = end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
    else:
        raise ValueError(
            f"SOLVER.LR_SCHEDULER_NAME: unknown '{name}' (use WarmupMultiStepLR or WarmupCosineLR)"
        )
    if it < s.WARMUP_ITERS:
        alpha = it / s.WARMUP_ITERS
        if s.WARMUP_METHOD == "linear":
            warm = s.WARMUP_FACTOR * (1 - alpha) + alpha
        elif s.WARMUP_METHOD == "constant":
            warm = s.WARMUP_FACTOR
        else:
            raise ValueError(f"SOLVER.WARMUP_METHOD: unknown '{s.WARMUP_METHOD}'")
        factor *= warm
    return factor


def build_lr_scheduler(cfg, optimizer: torch.optim.Optimizer):
    """A ``LambdaLR`` stepped once per iteration. The lambda is a plain function, so the
    scheduler's state dict holds only numbers (it loads with ``weights_only=True``)."""
    late = [st for st in cfg.SOLVER.STEPS if st > cfg.SOLVER.MAX_ITER]
    if late:
        logger.warning(
            "SOLVER.STEPS %s lie beyond SOLVER.MAX_ITER %d and will never be reached",
            late,
            cfg.SOLVER.MAX_ITER,
        )
    frozen = cfg.clone()

    def factor(it: int) -> float:
        return lr_factor_at(frozen, it)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
