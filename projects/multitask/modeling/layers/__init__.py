from .deform_conv import ModulatedDeformConv2d

__all__ = ["ModulatedDeformConv2d"]
