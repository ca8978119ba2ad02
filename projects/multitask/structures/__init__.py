from .instances import Instances

__all__ = ["Instances"]
