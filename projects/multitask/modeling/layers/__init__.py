from .deform_conv import ModulatedDeformConv2d
from .norm import get_norm

__all__ = ["ModulatedDeformConv2d", "get_norm"]
