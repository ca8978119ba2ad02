"""Deterministic synthetic "crowded people" dataset in COCO person_keypoints format.

It lets a user with no COCO download and no GPU train and evaluate the whole model (boxes, masks,
17 keypoints, activities) in minutes on a small CPU::

    from multitask.data.synthetic import ensure_synthetic_dataset
    json_file, image_root = ensure_synthetic_dataset("datasets", "train")

or from the command line: ``python tools/make_synthetic_people.py --out /tmp/synth --num-images 8``.

Design
------
Every person is a small 3D articulated figure built on COCO's 17-keypoint skeleton (pelvis-rooted
forward kinematics: hips -> knees -> ankles -> feet, a torso that can lean, shoulders -> elbows ->
wrists -> hands, a neck and a head carrying nose/eyes/ears). Joint angles are sampled around one of
four activity templates -- ``walking`` (moderate stride, arms swinging opposite to the legs),
``running`` (forward lean, long stride, heel kick, elbows bent ~90 deg), ``sitting`` (thighs
~horizontal, shins down, often on a stool) and ``standing`` (legs straight, arms down, sometimes a
raised arm / hand on hip / hand to face) -- with random per-joint variation; which side leads is
random (pose mirroring). The figure is rotated by a random yaw (like COCO's people, mostly towards
the camera, with 3/4, side and back views: :func:`_sample_yaw`), a small camera pitch and an
in-plane roll, projected orthographically with a random scale (~30 px to ~90 % of the image
height) and aspect squeeze, and painted part by part from far to near (painter's algorithm):
tapered capsules for limbs, a shaded 3D box for the torso and a per-pixel shaded sphere for the
head. The keypoints are exactly the joint centres of the drawn limbs (pixel-index coordinates
like COCO: pixel centres at integer coordinates).

Colours vary per person and per part (skin tone, hair, shirt, trousers, shoes, sleeve/shorts
lengths, random jitter and rare off-palette colours) so that no colour identifies a part.

Left/right cue. The training mapper flips images horizontally and swaps the left/right keypoint
labels (``INPUT.RANDOM_FLIP``), so a colour convention such as "the left limbs are darker" would be
contradicted by half of the flipped training samples. Instead left/right is decided as for real
people, by cues that are consistent under flip+swap: the facing direction (eyes, nose and mouth on
the front of the head and hair on the back, a skin-coloured V-neck on the front of the shirt, feet
pointing forward) combined with depth cues (near-side limbs are drawn over the torso and lit
brighter, far-side limbs are hidden behind it and shaded darker). The generator is mirror
symmetric in distribution (yaw and -yaw equally likely, symmetric roll, random leading side,
light from either side), so a horizontally flipped sample with swapped labels is itself a
plausible sample.

Backgrounds mix smooth gradients, multi-octave value noise, stripes/checkers and flat colours with
sensor noise, plus random clutter (rectangles, discs, ellipses, polygons, thick lines, some in
clothing/skin colours) that is never an articulated figure.

Annotation conventions
----------------------
* People are painted in depth order; ``segmentation`` is the VISIBLE part of a person (what is
  left after later-painted people are drawn over it) as COCO RLE (``counts`` a str), so masks of
  one image are pairwise disjoint. ``area`` is the pixel count of that mask and ``bbox``
  ``[x, y, w, h]`` is the tight box of the visible mask (COCO's convention: boxes of the visible
  part, ``pycocotools.mask.toBbox``).
* Keypoint visibility: 2 = inside the image and not covered by a later-painted person (a joint
  hidden only by the person's own body, e.g. the far arm in a side view, stays 2); 1 = inside the
  image but covered by another person painted on top; 0 = outside the image, then ``x = y = 0``.
  Face keypoints on the far side of the person's own head (the nose and eyes of a back view, the
  far ear of a profile) are unlabelled, ``(0, 0, 0)``, as COCO's annotators leave them.
  ``num_keypoints`` counts ``v > 0``.
* Persons with fewer than ``min_visible_area`` visible pixels are dropped (almost nothing is).
* As in COCO, where only medium and large people (area >= 32^2) carry keypoints, a person whose
  visible area is below ``min_keypoint_area`` keeps its box, mask and activity but gets no
  keypoints: all 17 are ``(0, 0, 0)`` and ``num_keypoints = 0``, so the keypoint metric ignores
  it and the keypoint loss skips it.
* Each annotation has ``"activity"`` in :data:`ACTIVITY_CLASSES`; the json also lists them under
  the top-level key ``"activity_classes"``. ``iscrowd = 0``, ``category_id = 1``, annotation ids
  are unique from 1 and image ids are ``index + 1`` for ``images/{index:06d}.jpg``.

Determinism: image ``i`` is drawn from ``np.random.default_rng([seed, i])`` only, so the output
depends on ``(seed, i, parameters)`` alone -- not on the global RNG state nor on ``num_images``
(the first k images of a larger set equal a k-image set).

Video clips
-----------
:func:`generate_synthetic_clip` renders a clip for tracking and temporal activity (or
``python tools/make_synthetic_clips.py --output /tmp/clips --num-clips 2``): a static camera and
scene in which the same figures (body, colours, clothes) move from frame to frame. Walkers and
runners cross the image with a gait cycle (legs and arms swinging with a phase that advances with
their speed; runners faster, with larger swings) and enter and leave through the left and right
borders; people standing or sitting stay in place and sway slightly. A ground plane orders them
in depth (nearer people stand lower and are larger), so people who cross occlude each other. A
clip directory holds ``clip.mp4``, ``frames/000000.jpg ...``, MOTChallenge ``gt.txt`` and a COCO
``annotations.json`` with one image per frame and a stable ``track_id`` per annotation (see
:mod:`.video`). :func:`render_clip` yields the frames and persons without writing anything. A clip
depends only on ``(seed, clip_index, parameters)``, and its first k frames do not depend on the
number of frames.
"""

# Constants that are not in __all__ are re-exported too: they are part of the interface (tests and
# callers read them as ``multitask.data.synthetic.<NAME>``).
from .clip import render_clip
from .poses import ACTIVITY_CLASSES
from .scene import (  # noqa: F401
    DEFAULT_IMAGE_SIZE,
    FACE_HIDDEN_DEPTH,
    FRONT_FACING_PROB,
    FRONT_YAW_STD_DEG,
    render_image,
)
from .skeleton import KEYPOINT_NAMES, SKELETON
from .splits import DATASET_DIRNAME, SPLITS, ensure_synthetic_dataset  # noqa: F401
from .video import VIDEO_GENERATOR_VERSION, ClipPaths, generate_synthetic_clip  # noqa: F401
from .writer import (  # noqa: F401
    DEFAULT_MIN_KEYPOINT_AREA,
    GENERATOR_VERSION,
    generate_synthetic_people,
)

__all__ = [
    "KEYPOINT_NAMES",
    "SKELETON",
    "ACTIVITY_CLASSES",
    "SPLITS",
    "DEFAULT_IMAGE_SIZE",
    "render_image",
    "generate_synthetic_people",
    "ensure_synthetic_dataset",
    "render_clip",
    "generate_synthetic_clip",
    "ClipPaths",
]
