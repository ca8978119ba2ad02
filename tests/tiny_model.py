"""Config overrides shared by the tests that build a model from random weights: ResNet-18,
32-channel FPN, one-conv mask head, two-conv keypoint head, 7x7 poolers (14x14 masks, 28x28
heatmaps), few proposals sampled, and every box kept at test time (a random model still returns
people). Seconds per iteration on one CPU thread.

The list lives in :mod:`multitask.benchmark.tiny_model`, next to the benchmark's ``--tiny``
settings that share its network sizes."""

from multitask.benchmark.tiny_model import TINY_MODEL

__all__ = ["TINY_MODEL"]
