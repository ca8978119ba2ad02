"""Helpers the post-processors share: reading a config key with a default, and loading a state
dict that must fit exactly (an error naming the file, the config key and every mismatch)."""

from typing import Dict

from torch import nn

__all__ = ["cfg_get", "load_state_dict_checked"]


def cfg_get(cfg, key: str, default):
    """``cfg.A.B.C`` for ``key = "A.B.C"``; ``default`` when ``cfg`` is None or lacks the key."""
    node = cfg
    for part in key.split("."):
        if node is None or not hasattr(node, part):
            return default
        node = getattr(node, part)
    return node


def load_state_dict_checked(module: nn.Module, sd: Dict, path: str, key: str, what: str) -> None:
    """Load ``sd`` into ``module`` only if every key and shape matches; else a ``RuntimeError``
    listing the missing and unexpected keys and the shape mismatches."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in sd)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        raise RuntimeError(
            f"{key}: {what} weights file '{path}' does not match the model: "
            f"missing keys {missing}, unexpected keys {unexpected}, shape mismatches {shapes}"
        )
    module.load_state_dict(sd, strict=True)
