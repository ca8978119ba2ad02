"""Where the tests find the real data that ships beside the repository (``<repo>/../shared/data``):
COCO 2017 person keypoints (coco-mini, found as the ``coco_mini_*`` datasets find it, so
``$MULTITASK_COCO_MINI`` points elsewhere) and MPII poses with activity names. The tests that read
them are skipped where they are absent."""

import os
from pathlib import Path

from multitask.data.builtin import _find_coco_mini

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COCO_MINI = _find_coco_mini() or str(SHARED_DATA / "coco-mini")
COCO_MINI_VAL_IMAGES = os.path.join(COCO_MINI, "val2017")
COCO_MINI_VAL_JSON = os.path.join(COCO_MINI, "annotations", "person_keypoints_val2017.json")
MPII_CSV = str(SHARED_DATA / "mpii-activity" / "mpii_human_pose.csv")
