"""Named datasets and their metadata, as detectron2's ``DatasetCatalog`` / ``MetadataCatalog``.

``DatasetCatalog.register(name, func)`` stores a function that returns the dataset dicts (see
docs/internals.md); ``DatasetCatalog.get(name)`` calls it. Nothing is loaded at registration time.

``MetadataCatalog.get(name)`` returns (creating on first use) a :class:`Metadata` object: a plain
attribute bag with ``set(**kw)``, ``get(key, default)`` and ``as_dict()``.
"""
import logging
from collections import UserDict
from typing import Any, Callable, Dict, List

logger = logging.getLogger(__name__)

__all__ = ["DatasetCatalog", "MetadataCatalog", "Metadata"]


class _DatasetCatalog(UserDict):
    """A global name -> loader-function map. Use the module's ``DatasetCatalog`` instance."""

    def register(self, name: str, func: Callable[[], List[dict]]) -> None:
        """Register ``func`` (no arguments, returns ``list[dict]``) under ``name``.

        A name can be registered once; :meth:`remove` it first to replace it.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"Dataset name must be a non-empty str, got {name!r}")
        if not callable(func):
            raise TypeError(
                f"You must register a function with `DatasetCatalog.register`, got {func!r}"
            )
        if name in self:
            raise ValueError(
                f"Dataset '{name}' is already registered! Remove it first to replace it."
            )
        self[name] = func

    def get(self, name: str) -> List[dict]:  # type: ignore[override]
        """Call the registered function of ``name`` and return its list of dataset dicts."""
        try:
            f = self[name]
        except KeyError as e:
            raise KeyError(
                f"Dataset '{name}' is not registered! Available datasets are: "
                f"{', '.join(sorted(self.keys())) or '(none)'}"
            ) from e
        return f()

    def list(self) -> List[str]:
        """Names of all registered datasets."""
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Forget ``name`` (KeyError if it is not registered)."""
        try:
            self.pop(name)
        except KeyError as e:
            raise KeyError(f"Dataset '{name}' is not registered, cannot remove it.") from e

    def __str__(self) -> str:
        return f"DatasetCatalog(registered datasets: {', '.join(self.keys())})"

    __repr__ = __str__


DatasetCatalog = _DatasetCatalog()


class Metadata:
    """An attribute bag for one dataset: ``md.thing_classes``, ``md.set(a=1)``, ``md.get("a", 0)``.

    Reading a missing attribute raises ``AttributeError`` naming the ones that exist. Setting an
    attribute again replaces its value.
    """

    name: str = "N/A"

    def __init__(self, name: str = "N/A", **kwargs: Any):
        object.__setattr__(self, "name", name)
        self.set(**kwargs)

    def __getattr__(self, key: str) -> Any:
        # only called when normal lookup fails
        if key.startswith("__"):
            raise AttributeError(key)
        raise AttributeError(
            f"Attribute '{key}' does not exist in the metadata of dataset '{self.name}'. "
            f"Available keys are {sorted(self.as_dict().keys())}."
        )

    def __setattr__(self, key: str, val: Any) -> None:
        if key == "name" and val != self.name:
            raise AttributeError("The name of a Metadata cannot be changed")
        object.__setattr__(self, key, val)

    def set(self, **kwargs: Any) -> "Metadata":
        """Set several attributes at once; returns ``self``."""
        for k, v in kwargs.items():
            setattr(self, k, v)
        return self

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute ``key``, or ``default`` when it is not set."""
        return self.__dict__.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.__dict__

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)

    def __repr__(self) -> str:
        return f"Metadata({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class _MetadataCatalog(UserDict):
    """A global name -> :class:`Metadata` map. ``get`` creates an empty one on first use."""

    def get(self, name: str) -> Metadata:  # type: ignore[override]
        if not isinstance(name, str) or not name:
            raise TypeError(f"Dataset name must be a non-empty str, got {name!r}")
        md = self.data.get(name)
        if md is None:
            md = Metadata(name=name)
            self.data[name] = md
        return md

    def list(self) -> List[str]:
        return list(self.keys())

    def remove(self, name: str) -> None:
        """Forget the metadata of ``name`` (no error when there is none)."""
        self.data.pop(name, None)

    def __str__(self) -> str:
        return f"MetadataCatalog(registered metadata: {', '.join(self.keys())})"

    __repr__ = __str__


MetadataCatalog = _MetadataCatalog()
