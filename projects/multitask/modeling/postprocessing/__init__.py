from .registry import (
    POSTPROCESSOR_REGISTRY,
    build_postprocessors,
    run_postprocessors,
    set_postprocessor_precision,
)

# Importing the modules registers their post-processors ("PoseResidualNetwork",
# "ActivityClassifier").
from . import activity, prn  # noqa: F401,E402  isort: skip
from .activity import ActivityClassifier, ActivityMLP  # noqa: E402
from .activity_features import keypoints_to_activity_features  # noqa: E402
from .prn import PoseResidualNetwork  # noqa: E402
from .prn_codec import decode_prn_output, encode_prn_input, encode_prn_inputs  # noqa: E402

__all__ = [
    "POSTPROCESSOR_REGISTRY",
    "build_postprocessors",
    "run_postprocessors",
    "set_postprocessor_precision",
    "PoseResidualNetwork",
    "encode_prn_input",
    "encode_prn_inputs",
    "decode_prn_output",
    "ActivityClassifier",
    "ActivityMLP",
    "keypoints_to_activity_features",
]
