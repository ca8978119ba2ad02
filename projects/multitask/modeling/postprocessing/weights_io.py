"""Loading a post-processor's state dict that must fit exactly (an error naming the file, the
config key and every mismatch)."""

from typing import Dict

from torch import nn

__all__ = ["load_state_dict_checked"]


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
