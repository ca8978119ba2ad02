"""One way to build a configurable part: ``from_config`` + :func:`configurable`.

A class whose ``__init__`` takes keyword arguments only and that has a classmethod
``from_config(cfg, ...) -> Dict`` mapping the config to those arguments is built either way::

    PoseResidualNetwork(cfg)                         # everything from cfg
    PoseResidualNetwork(cfg, weights="")             # cfg, with some arguments given
    PoseResidualNetwork(heatmap_size=(28, 18))       # the default config, with some given
    DatasetMapper(cfg, False)                        # from_config(cfg, is_train) takes more

so that the config (``get_cfg()``) is the one place where defaults live. Arguments that
``from_config`` itself takes after ``cfg`` (e.g. ``is_train``) may be given by position or by
name and reach it. This is detectron2's ``@configurable`` in its simplest form.
"""

import functools
import inspect
from typing import Callable

__all__ = ["configurable"]


def configurable(init: Callable) -> Callable:
    """Decorate ``__init__(self, *, ...)`` of a class with a ``from_config(cls, cfg, ...)``."""

    @functools.wraps(init)
    def wrapped(self, cfg=None, *args, **kwargs):
        from .defaults import get_cfg

        from_config = type(self).from_config
        own = list(inspect.signature(from_config).parameters)[1:]  # after cfg
        if len(args) > len(own):
            raise TypeError(f"{type(self).__name__}: too many positional arguments {args}")
        extra = dict(zip(own, args))
        extra.update({k: kwargs[k] for k in own if k in kwargs})
        built = from_config(cfg if cfg is not None else get_cfg(), **extra)
        unknown = sorted(set(kwargs) - set(built) - set(own))
        if unknown:
            raise TypeError(f"{type(self).__name__}: unexpected arguments {unknown}; it takes "
                            f"{sorted(built)}")
        built.update({k: v for k, v in kwargs.items() if k in built})
        init(self, **built)

    return wrapped
