"""The benchmark's settings: plain data, so they pickle into the memory section's workers."""

from dataclasses import dataclass
from typing import Tuple

SECTIONS = ("inference", "train", "postproc", "memory", "ops", "amp", "tracking")
TINY_SIZE = (128, 160)


@dataclass
class Settings:
    """Everything a measurement needs; plain data so it pickles into memory workers."""

    device: str
    amp: bool
    threads: int
    repeats: int
    warmup: int
    size: Tuple[int, int]
    memory_size: Tuple[int, int]
    num_people: int
    train_images: int
    train_people: int
    tiny: bool
    tv_backbone: str
    boxes: str = "people"
    seed: int = 0
