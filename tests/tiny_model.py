"""What the tests that train or build a model share.

``TINY_MODEL``: config overrides for a model from random weights: ResNet-18, 32-channel FPN,
one-conv mask head, two-conv keypoint head, 7x7 poolers (14x14 masks, 28x28 heatmaps), few
proposals sampled, and every box kept at test time (a random model still returns people). Seconds
per iteration on one CPU thread. The list lives in :mod:`multitask.benchmark.tiny_model`, next to
the benchmark's ``--tiny`` settings that share its network sizes.

:func:`small_synthetic_people` and :func:`small_training` make a few synthetic images and the
overrides that train and evaluate on them.
"""

from pathlib import Path
from typing import List, Sequence

import torch

from multitask.benchmark.tiny_model import TINY_MODEL
from multitask.data.synthetic import generate_synthetic_people

__all__ = ["TINY_MODEL", "small_synthetic_people", "small_training", "random_deform_offsets"]


def small_synthetic_people(out_dir, num_images: int = 4, seed: int = 3) -> str:
    """A COCO json of ``num_images`` 128x160 synthetic images under ``out_dir`` (people 60+ px
    tall, every person with keypoints); returns its path (images in ``out_dir/images``)."""
    return generate_synthetic_people(
        str(out_dir), num_images=num_images, seed=seed, image_size=(128, 160),
        min_person_height=60.0, min_keypoint_area=0,
    )


def small_training(name: str, json_file, out_dir, max_iter: int = 1,
                   extra: Sequence[str] = ()) -> List[str]:
    """Overrides that register ``json_file`` as ``name`` and train (``max_iter`` iterations,
    batch 2, seed 0, no loader workers) and evaluate on it at 128-160 px, writing to ``out_dir``."""
    images = str(Path(json_file).parent / "images")
    return [
        "DATASETS.REGISTER", repr([[name, str(json_file), images]]),
        "DATASETS.TRAIN", f"('{name}',)",
        "DATASETS.TEST", f"('{name}',)",
        "INPUT.MIN_SIZE_TRAIN", "(128,)",
        "INPUT.MAX_SIZE_TRAIN", "160",
        "INPUT.MIN_SIZE_TEST", "128",
        "INPUT.MAX_SIZE_TEST", "160",
        "SOLVER.IMS_PER_BATCH", "2",
        "SOLVER.MAX_ITER", str(max_iter),
        "DATALOADER.NUM_WORKERS", "0",
        "SEED", "0",
        "OUTPUT_DIR", str(out_dir),
        *extra,
    ]  # fmt: skip


def random_deform_offsets(model: torch.nn.Module, generator: torch.Generator,
                          std: float) -> None:
    """Give every deformable conv's offset branch random weights (``std``): built, they are zero
    and the convs equal plain ones; tests of the deformable paths need them to deform."""
    with torch.no_grad():
        for m in model.modules():
            if hasattr(m, "conv_offset"):
                m.conv_offset.weight.copy_(
                    torch.randn(m.conv_offset.weight.shape, generator=generator) * std)
