"""Normalization layers by config name, as detectron2's ``get_norm``."""

from typing import Callable, Optional

from torch import nn

_NAMES = ("", "GN", "BN")


def get_norm(norm: str, key: str = "NORM") -> Optional[Callable[[int], nn.Module]]:
    """Return a ``channels -> module`` factory for ``norm``, or ``None`` for ``""``.

    ``"GN"`` is GroupNorm with 32 groups (fewer when the channels do not divide by 32), the
    choice of detectron2's heads: it does not depend on how many ROIs are in a batch. ``"BN"`` is
    plain BatchNorm2d. ``key`` names the config key in the error for an unknown name.
    """
    if norm not in _NAMES:
        raise ValueError(f"{key}: unknown norm '{norm}' (use one of {_NAMES})")
    if norm == "":
        return None
    if norm == "GN":
        return lambda c: nn.GroupNorm(_num_groups(c), c)
    return nn.BatchNorm2d


def _num_groups(channels: int, preferred: int = 32) -> int:
    groups = min(preferred, channels)
    while channels % groups:
        groups -= 1
    return groups
