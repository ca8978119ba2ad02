"""Checkpointing: fvcore's ``Checkpointer`` with atomic writes and ``weights_only`` loading.

fvcore writes checkpoints with a plain ``torch.save`` into the final path; a crash mid-write
leaves a truncated ``model_XXXXXXX.pth`` that ``last_checkpoint`` points to. Here every file is
written to a temporary name in the same directory and moved into place with ``os.replace``.
Files are read with ``torch.load(..., weights_only=True)``: a checkpoint is data, never code.
"""

import logging
import os
from typing import Any, Dict

import torch
from fvcore.common.checkpoint import Checkpointer

from ..utils.file_io import atomic_write

logger = logging.getLogger(__name__)

# Prefix under which a torchvision-named ResNet lives inside MultiTaskRCNN
_BACKBONE_PREFIX = "backbone.bottom_up."


def is_torchvision_resnet_state_dict(state_dict: Dict[str, Any]) -> bool:
    """True for a classification ResNet state dict in torchvision's naming (ImageNet weights)."""
    return "conv1.weight" in state_dict and any(k.startswith("layer1.") for k in state_dict)


class MultiTaskCheckpointer(Checkpointer):
    """Saves ``model_XXXXXXX.pth`` + ``last_checkpoint`` atomically; loads with ``weights_only``.

    ``load`` also accepts a torchvision ImageNet ResNet file (keys ``conv1.*``, ``layer1.*``,
    ``fc.*``): its keys are mapped onto the backbone and the classifier is dropped.
    """

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        save_file = os.path.join(self.save_dir, f"{name}.pth")
        self.logger.info("Saving checkpoint to %s", save_file)
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(os.path.basename(save_file))

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def _load_file(self, filename: str) -> Dict[str, Any]:
        try:
            data = torch.load(filename, map_location=torch.device("cpu"), weights_only=True)
        except Exception as e:  # truncated / not a torch file / contains code objects
            raise RuntimeError(f"Cannot read checkpoint '{filename}': {e}") from e
        if not isinstance(data, dict):
            raise RuntimeError(f"Checkpoint '{filename}' holds a {type(data).__name__}, not a dict")
        if "model" not in data:
            state = data.get("state_dict", data)
            if is_torchvision_resnet_state_dict(state):
                self.logger.info(
                    "'%s' is a torchvision ResNet; loading it into the backbone", filename
                )
                state = {
                    _BACKBONE_PREFIX + k: v
                    for k, v in state.items()
                    if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
                }
            data = {"model": state}
        return data

    def load(self, path: str, checkpointables=None) -> Dict[str, Any]:
        """Load ``path`` (see fvcore); a missing file is a ``FileNotFoundError`` naming it."""
        if path and not os.path.isfile(path):
            raise FileNotFoundError(f"Checkpoint file '{path}' does not exist")
        return super().load(path, checkpointables=checkpointables)

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """Resume from ``last_checkpoint`` when ``resume`` and it exists, else load ``path``."""
        if resume and self.has_checkpoint():
            path = self.get_checkpoint_file()
            return self.load(path)
        if path:
            return self.load(path, checkpointables=[])
        return {}
