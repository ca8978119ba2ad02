"""Reading a post-processor's weights file and loading a state dict that must fit exactly (errors
naming the file, the config key and every mismatch)."""

import os
from typing import Any, Dict

import torch
from torch import nn

__all__ = ["read_weights_file", "load_state_dict_checked"]


def read_weights_file(path: str, key: str, what: str) -> Any:
    """``torch.load`` (weights only) of a post-processor's weights file; a missing or unreadable
    file is an error naming the config ``key`` and the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{key}: {what} weights file not found: '{path}'")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 -- re-raised with the file name
        raise RuntimeError(f"{key}: cannot read {what} weights file '{path}': {e}") from e


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
