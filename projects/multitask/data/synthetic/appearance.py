"""Colours: skin and hair palettes, random colours and per-person clothing."""

import colorsys

import numpy as np

# Skin tones (RGB) from light to dark; stored as BGR below.
_SKIN_RGB = [
    (255, 224, 196), (241, 194, 125), (224, 172, 105), (198, 134, 66), (161, 102, 62),
    (141, 85, 36), (92, 56, 36),
]
_HAIR_RGB = [(20, 16, 14), (60, 40, 25), (110, 75, 40), (200, 160, 90), (150, 150, 150),
             (120, 40, 20)]


def _bgr(rgb):
    return np.array(rgb[::-1], dtype=np.float64)


def _rand_color(rng, sat=(0.15, 1.0), val=(0.2, 1.0)):
    """A random BGR colour (float64, 0..255) from HSV."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([b, g, r]) * 255.0


def _jitter(rng, color, amount=14.0):
    return np.clip(color + rng.uniform(-amount, amount, size=3), 0, 255)


def _person_colors(rng):
    """Per-person colour set (BGR float); every part gets its own jitter."""
    if rng.random() < 0.1:
        skin = _rand_color(rng, sat=(0.1, 0.8), val=(0.3, 1.0))
    else:
        skin = _jitter(rng, _bgr(_SKIN_RGB[rng.integers(len(_SKIN_RGB))]), 18)
    if rng.random() < 0.15:
        hair = _rand_color(rng)
    else:
        hair = _jitter(rng, _bgr(_HAIR_RGB[rng.integers(len(_HAIR_RGB))]), 12)
    shirt = _rand_color(rng)
    pants = _rand_color(rng, sat=(0.05, 0.9), val=(0.1, 0.9))
    shoes = _rand_color(rng, sat=(0.0, 0.8), val=(0.05, 0.7))
    long_sleeves = rng.random() < 0.5
    shorts = rng.random() < 0.25
    bare_arms = rng.random() < 0.15
    c = {
        "skin": skin,
        "hair": hair,
        "shirt": shirt,
        "torso": _jitter(rng, shirt, 8),
        "upper_arm": _jitter(rng, skin if bare_arms else shirt, 8),
        "forearm": _jitter(rng, shirt if long_sleeves and not bare_arms else skin, 8),
        "hand": _jitter(rng, skin, 8),
        "neck": _jitter(rng, skin, 6),
        "thigh": _jitter(rng, pants, 8),
        "shin": _jitter(rng, skin if shorts else pants, 8),
        "foot": _jitter(rng, shoes, 8),
        "vneck": rng.random() < 0.8,
    }
    return c
