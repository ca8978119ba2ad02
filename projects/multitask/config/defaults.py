"""Configuration defaults.

``_C`` holds the detectron2-style keys this project shares with detectron2 (same names, same
meaning). :func:`add_multitask_config` adds the keys that are new in this project. Neither mutates
anything at import time: :func:`get_cfg` returns a fresh copy with both applied.

Keys that do not exist are refused by fvcore's ``CfgNode`` when a yaml file or a command-line
override names them (``KeyError: 'Non-existent config key: ...'``).
"""
from fvcore.common.config import CfgNode as _FvCfgNode


class CfgNode(_FvCfgNode):
    """fvcore ``CfgNode`` whose ``merge_from_file`` refuses unknown keys by their full name.

    fvcore already refuses them; this subclass only adds the file name to the message so a typo
    in a yaml is found at once.
    """

    def merge_from_file(self, cfg_filename: str, allow_unsafe: bool = False) -> None:
        try:
            super().merge_from_file(cfg_filename, allow_unsafe=allow_unsafe)
        except KeyError as e:
            raise KeyError(f"{e.args[0]} (in config file {cfg_filename})") from None

    def merge_from_list(self, cfg_list: list) -> None:
        if len(cfg_list) % 2 != 0:
            raise ValueError(
                f"Config overrides must be KEY VALUE pairs, got an odd number: {cfg_list}"
            )
        # yacs refuses unknown override keys with an AssertionError, not a KeyError: check first
        for full_key in cfg_list[0::2]:
            node = self
            for subkey in str(full_key).split("."):
                if not isinstance(node, _FvCfgNode) or subkey not in node:
                    raise KeyError(
                        f"Non-existent config key: {full_key} (in command-line overrides)"
                    )
                node = node[subkey]
        try:
            super().merge_from_list(cfg_list)
        except KeyError as e:
            raise KeyError(f"{e.args[0]} (in command-line overrides)") from None


_C = CfgNode()
_C.VERSION = 2

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
_C.MODEL = CfgNode()
_C.MODEL.META_ARCHITECTURE = "MultiTaskRCNN"
_C.MODEL.DEVICE = "cuda"
_C.MODEL.WEIGHTS = ""
_C.MODEL.MASK_ON = True
_C.MODEL.KEYPOINT_ON = True
# BGR means/stds of the pixels, as detectron2 (images are read as BGR uint8)
_C.MODEL.PIXEL_MEAN = [103.530, 116.280, 123.675]
_C.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]

_C.MODEL.BACKBONE = CfgNode()
_C.MODEL.BACKBONE.NAME = "build_resnet_fpn_backbone"
_C.MODEL.BACKBONE.FREEZE_AT = 2

_C.MODEL.RESNETS = CfgNode()
_C.MODEL.RESNETS.DEPTH = 50
_C.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.RESNETS.NORM = "FrozenBN"
_C.MODEL.RESNETS.DEFORM_ON_PER_STAGE = [False, False, False, False]  # res2..res5
_C.MODEL.RESNETS.DEFORM_MODULATED = True
_C.MODEL.RESNETS.DEFORM_NUM_GROUPS = 1
# Channel width of res2's 3x3 convs (64 for ResNet-18..152)
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
# Where a stage's first bottleneck block strides: False = in the 3x3 conv (torchvision's ResNets
# and torchvision's R-CNNs); True = in the first 1x1 conv (the MSRA ResNets of detectron2's model
# zoo: their weights load either way, but give wrong outputs with False)
_C.MODEL.RESNETS.STRIDE_IN_1X1 = False
# eps of the backbone's FrozenBatchNorm2d: 1e-5 as detectron2 and torchvision's ImageNet
# ResNets; torchvision's COCO R-CNN weights (COCO_V1) were trained and are run with 0.0
_C.MODEL.RESNETS.FROZEN_BN_EPS = 1e-5

_C.MODEL.FPN = CfgNode()
_C.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
_C.MODEL.FPN.OUT_CHANNELS = 256
# "" (none), "GN" or "BN" after the lateral and output convs; detectron2's key. GN in the FPN and
# the heads is the recipe for training detectors from scratch (He et al., "Rethinking ImageNet
# Pre-training").
_C.MODEL.FPN.NORM = ""

_C.MODEL.ANCHOR_GENERATOR = CfgNode()
_C.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
_C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[0.5, 1.0, 2.0]]

_C.MODEL.RPN = CfgNode()
_C.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
_C.MODEL.RPN.IOU_THRESHOLDS = [0.3, 0.7]
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
_C.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 2000
_C.MODEL.RPN.PRE_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TRAIN = 1000
_C.MODEL.RPN.POST_NMS_TOPK_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
_C.MODEL.RPN.LOSS_WEIGHT = 1.0

_C.MODEL.ROI_HEADS = CfgNode()
_C.MODEL.ROI_HEADS.NAME = "MultiTaskROIHeads"
_C.MODEL.ROI_HEADS.NUM_CLASSES = 1  # person
_C.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
_C.MODEL.ROI_HEADS.IOU_THRESHOLDS = [0.5]
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
_C.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.05
_C.MODEL.ROI_HEADS.NMS_THRESH_TEST = 0.5
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE = 100

_C.MODEL.ROI_BOX_HEAD = CfgNode()
# NUM_CONV 3x3 convs of CONV_DIM channels (each followed by NORM), then NUM_FC fc layers of FC_DIM,
# as detectron2's FastRCNNConvFCHead: 0 convs + 2 fc is the "2fc" head, 4 convs + 1 fc with GN
# the "4conv1fc" head of the from-scratch recipe.
_C.MODEL.ROI_BOX_HEAD.NUM_CONV = 0
_C.MODEL.ROI_BOX_HEAD.CONV_DIM = 256
_C.MODEL.ROI_BOX_HEAD.NUM_FC = 2
_C.MODEL.ROI_BOX_HEAD.NORM = ""
_C.MODEL.ROI_BOX_HEAD.FC_DIM = 1024
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 2
# "ROIAlignV2" (detectron2's default): roi_align(aligned=True), features sampled under the box;
# "ROIAlign": aligned=False, torchvision's MultiScaleRoIAlign (shifted by half a feature stride)
_C.MODEL.ROI_BOX_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
_C.MODEL.ROI_BOX_HEAD.LOSS_WEIGHT = 1.0

_C.MODEL.ROI_MASK_HEAD = CfgNode()
_C.MODEL.ROI_MASK_HEAD.NUM_CONV = 4
_C.MODEL.ROI_MASK_HEAD.CONV_DIM = 256
_C.MODEL.ROI_MASK_HEAD.NORM = ""  # "" (none), "GN" or "BN" after each conv
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14  # masks are predicted at 2x this: 28x28
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 2
_C.MODEL.ROI_MASK_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_MASK_HEAD.LOSS_WEIGHT = 1.0

_C.MODEL.ROI_KEYPOINT_HEAD = CfgNode()
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS = tuple(512 for _ in range(8))
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14  # heatmaps are predicted at 4x this: 56x56
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 2
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = "ROIAlignV2"
_C.MODEL.ROI_KEYPOINT_HEAD.LOSS_WEIGHT = 1.0
_C.MODEL.ROI_KEYPOINT_HEAD.NAME = "OffsetRefinedKeypointHead"

# ---------------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------------
_C.INPUT = CfgNode()
_C.INPUT.MIN_SIZE_TRAIN = (640, 672, 704, 736, 768, 800)
_C.INPUT.MIN_SIZE_TRAIN_SAMPLING = "choice"
_C.INPUT.MAX_SIZE_TRAIN = 1333
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.FORMAT = "BGR"
_C.INPUT.RANDOM_FLIP = "horizontal"

# ---------------------------------------------------------------------------------------------
# Datasets and data loader
# ---------------------------------------------------------------------------------------------
_C.DATASETS = CfgNode()
_C.DATASETS.TRAIN = ("keypoints_coco_2017_train",)
_C.DATASETS.TEST = ("keypoints_coco_2017_val",)

_C.DATALOADER = CfgNode()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.ASPECT_RATIO_GROUPING = True
_C.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True

# ---------------------------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------------------------
_C.SOLVER = CfgNode()
_C.SOLVER.OPTIMIZER = "SGD"
_C.SOLVER.MAX_ITER = 90000
_C.SOLVER.BASE_LR = 0.02
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.NESTEROV = False
_C.SOLVER.WEIGHT_DECAY = 0.0001
_C.SOLVER.WEIGHT_DECAY_NORM = 0.0
_C.SOLVER.GAMMA = 0.1
_C.SOLVER.STEPS = (60000, 80000)
_C.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
_C.SOLVER.WARMUP_FACTOR = 1.0 / 1000
_C.SOLVER.WARMUP_ITERS = 1000
_C.SOLVER.WARMUP_METHOD = "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 5000
_C.SOLVER.IMS_PER_BATCH = 16
_C.SOLVER.CLIP_GRADIENTS = CfgNode()
_C.SOLVER.CLIP_GRADIENTS.ENABLED = False
_C.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
_C.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
_C.SOLVER.CLIP_GRADIENTS.NORM_TYPE = 2.0
_C.SOLVER.AMP = CfgNode()
# Mixed-precision training: float16 autocast with loss scaling on CUDA, bfloat16 autocast on CPUs
# with native bfloat16 (AVX512-BF16 / AMX); ignored with a warning on other CPUs
_C.SOLVER.AMP.ENABLED = False

# ---------------------------------------------------------------------------------------------
# Test
# ---------------------------------------------------------------------------------------------
_C.TEST = CfgNode()
_C.TEST.EVAL_PERIOD = 0
# [[task, metric, value, tolerance], ...] checked after evaluation, as in detectron2
_C.TEST.EXPECTED_RESULTS = []
# Per-keypoint OKS sigmas of keypoint AP; empty = the test dataset metadata's keypoint_oks_sigmas
# (COCOeval's own for COCO's person keypoints)
_C.TEST.KEYPOINT_OKS_SIGMAS = []
# Subtracted from predicted keypoint x, y when writing COCO results: 0.5 for models trained here
# (the loader adds detectron2's +0.5 to COCO's pixel-index keypoints), 0.0 for torchvision's
# weights (trained on COCO's coordinates as they are)
_C.TEST.KEYPOINT_COORD_OFFSET = 0.5
# With "PoseResidualNetwork" in MODEL.POSTPROCESSORS, every table is for the chain's final
# keypoints; True also scores the keypoint head's keypoints before the PRN, as the task
# "keypoints_before_prn" (same detections), so the PRN's gain is read off one evaluation
_C.TEST.EVAL_KEYPOINTS_BEFORE_PRN = False
# Inference on the CPU in channels-last memory format: the backbone, FPN and ROI heads' weights
# are converted when the model enters eval mode (and back when it enters training mode), the
# image batch is channels-last, and the deformable convs and poolers keep it. The same values to
# float tolerance, 1.15-1.2x faster on the R-50 model at 800x1216 (docs/benchmarks.md).
# Training keeps NCHW (its step was 1.27x slower in channels-last here); CUDA keeps NCHW.
_C.TEST.CHANNELS_LAST = True

_C.OUTPUT_DIR = "./output"
_C.SEED = -1
_C.CUDNN_BENCHMARK = False


def add_multitask_config(cfg: CfgNode) -> None:
    """Add this project's keys to ``cfg`` (in place). Call before ``merge_from_file``."""
    _C = cfg  # noqa: N806  (keeps the ``_C.X = ...`` look of detectron2's config files)

    # --- keypoint head: offset refinement (report eqs. 2-6) and deformable convs ------------
    # Use modulated deformable 3x3 convs in the keypoint head ("RB+H")
    _C.MODEL.ROI_KEYPOINT_HEAD.DEFORM_ON = False
    # Use DCNv2 (offsets + sigmoid mask) for the keypoint head's deformable convs
    _C.MODEL.ROI_KEYPOINT_HEAD.DEFORM_MODULATED = True
    # Predict 2K offset maps and refine heatmaps as y(p) = x(p + dp(p))
    _C.MODEL.ROI_KEYPOINT_HEAD.OFFSET_REFINEMENT = True
    # Keypoint loss: "softmax_ce" (detectron2, one-hot target), "gaussian_ce" (softmax
    # cross-entropy against a normalised Gaussian target) or "gaussian_mse" (report, sigma=1)
    _C.MODEL.ROI_KEYPOINT_HEAD.LOSS_TYPE = "softmax_ce"
    # Standard deviation, in heatmap cells, of the Gaussian targets of "gaussian_ce"/"_mse"
    _C.MODEL.ROI_KEYPOINT_HEAD.GAUSSIAN_SIGMA = 1.0
    # Heatmap side length the keypoint head predicts (56 = 4x a 14x14 pooler)
    _C.MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE = 56
    # Normalization after each keypoint head conv: "" (none, as detectron2), "GN" or "BN"
    _C.MODEL.ROI_KEYPOINT_HEAD.NORM = ""
    # How heatmaps become keypoints: "subcell" (argmax of the 56x56 map, moved a quarter cell
    # towards the larger neighbour) or "bicubic" (torchvision's and detectron2's: each map resized
    # bicubically to the box's size in pixels, argmax + 0.5)
    _C.MODEL.ROI_KEYPOINT_HEAD.DECODER = "subcell"
    # What pred_keypoints[..., 2] holds, and so what every keypoint threshold (PRN, activity,
    # visualizer) compares against: "logit" (the heatmap value at the peak, torchvision's
    # keypoints_scores) or "prob" (the peak's softmax probability over the map, detectron2's)
    _C.MODEL.ROI_KEYPOINT_HEAD.SCORE = "logit"

    # --- ROI pooling ---------------------------------------------------------------------
    # Box side (sqrt of area, input pixels) pooled from p4; a box half as large comes from p3,
    # and so on (detectron2 and torchvision fix it at 224, which suits ~800 px inputs: scale it
    # with the input size for small images)
    _C.MODEL.ROI_HEADS.CANONICAL_BOX_SIZE = 224

    # --- backbone ----------------------------------------------------------------------
    # Scale every ResNet stage's width (1.0 = standard; < 1 for CPU-sized models trained from
    # scratch -- ImageNet weights only fit 1.0)
    _C.MODEL.RESNETS.WIDTH_MULT = 1.0

    # --- post-processors after the ROI heads ----------------------------------------------
    # Ordered names from POSTPROCESSOR_REGISTRY run on each image's predictions, e.g.
    # ["PoseResidualNetwork", "ActivityClassifier"]
    _C.MODEL.POSTPROCESSORS = []

    # --- Pose Residual Network (MultiPoseNet) ---------------------------------------------
    _C.MODEL.PRN = CfgNode()
    # Weights of the PRN alone ("" = taken from the full model checkpoint)
    _C.MODEL.PRN.WEIGHTS = ""
    # Heatmap height and width of the PRN input/output (MultiPoseNet: 56x36)
    _C.MODEL.PRN.HEATMAP_SIZE = [56, 36]
    # Hidden width of the residual MLP
    _C.MODEL.PRN.HIDDEN_DIM = 1024
    # Dropout of the residual MLP
    _C.MODEL.PRN.DROPOUT = 0.5
    # Each box is enlarged by this fraction of its size on every side before encoding
    _C.MODEL.PRN.BOX_MARGIN = 0.1
    # Std (heatmap cells) of the Gaussian peaks of the PRN input
    _C.MODEL.PRN.SIGMA = 1.0
    # Keep the keypoint head's keypoint where the PRN's peak probability is below this
    _C.MODEL.PRN.MIN_CONFIDENCE = 0.05
    # Keypoints with a score (pred_keypoints[..., 2]: MODEL.ROI_KEYPOINT_HEAD.SCORE says whether
    # logit or probability) or COCO visibility above this are drawn into the PRN input
    _C.MODEL.PRN.KEYPOINT_THRESHOLD = 0.05
    # Detections with a box score below this give their keypoints only to their own box
    _C.MODEL.PRN.SOURCE_SCORE_THRESH = 0.3
    # Snap the PRN's peak to the nearest detected keypoint of its type within this many heatmap
    # cells, so the PRN chooses which keypoint and the keypoint head sets where; < 0: any
    # distance, 0: no snapping (the peak cell's centre)
    _C.MODEL.PRN.SNAP_RADIUS = -1.0
    # Layer stack: "residual_mlp" (softmax per keypoint channel) or "multiposenet" (the original
    # Keras model: ReLU on the second layer, one softmax over all keypoints' maps); see
    # multitask.modeling.postprocessing.prn. Must match the weights file.
    _C.MODEL.PRN.VARIANT = "residual_mlp"
    # Storage of the two fully connected layers at inference (the model in eval mode): "float16"
    # halves their 268 MB at the default size with the same assignment (tools/eval_prn.py
    # --dtype); training and the fit use float32
    _C.MODEL.PRN.INFERENCE_DTYPE = "float16"
    # Training only: before the first iteration, fit the PRN on the ground-truth keypoints of
    # DATASETS.TRAIN (saved to OUTPUT_DIR/prn.pth and carried in every checkpoint). Needs
    # "PoseResidualNetwork" in MODEL.POSTPROCESSORS; MODEL.PRN.WEIGHTS, when given, wins and
    # the fit is skipped. tools/train_prn.py is the same fit as a command.
    _C.MODEL.PRN.FIT_ON_TRAIN_GT = False
    # Epochs, Adam learning rate and batch size of that fit
    _C.MODEL.PRN.FIT_EPOCHS = 40
    _C.MODEL.PRN.FIT_LR = 1e-3
    _C.MODEL.PRN.FIT_BATCH_SIZE = 32

    # --- activity classifier ------------------------------------------------------------
    _C.MODEL.ACTIVITY = CfgNode()
    # Weights of the activity MLP alone ("" = taken from the full model checkpoint)
    _C.MODEL.ACTIVITY.WEIGHTS = ""
    # Activity class names, in output order
    _C.MODEL.ACTIVITY.CLASSES = ["walking", "running", "sitting", "standing"]
    # Hidden layer widths of the MLP (blog: 3072 -> 128)
    _C.MODEL.ACTIVITY.HIDDEN_DIMS = [3072, 128]
    # Dropout after each hidden layer
    _C.MODEL.ACTIVITY.DROPOUT = 0.3
    # Append a per-keypoint visibility mask to the 34-vector so missing joints are explicit
    _C.MODEL.ACTIVITY.USE_VISIBILITY = True
    # Also feed the MLP the pose's joint angles, limb directions and lengths (COCO keypoints;
    # see multitask.modeling.postprocessing.activity_features.pose_geometry_features). Must
    # match the weights file; False for files written before this key existed.
    _C.MODEL.ACTIVITY.GEOMETRY = True
    # Keypoints with a score below this count as missing for the classifier (the score is
    # MODEL.ROI_KEYPOINT_HEAD.SCORE's: a logit by default, a probability with "prob")
    _C.MODEL.ACTIVITY.KEYPOINT_THRESHOLD = 0.05
    # "unknown" (pred_activity -1) when the top calibrated probability is below this (0: never)
    _C.MODEL.ACTIVITY.MIN_CONFIDENCE = 0.0
    # "unknown" when fewer keypoints than this score above KEYPOINT_THRESHOLD (0: never)
    _C.MODEL.ACTIVITY.MIN_VISIBLE_KEYPOINTS = 0
    # Training only: before the first iteration, fit the ActivityClassifier post-processor on the
    # ground-truth poses of DATASETS.TRAIN (seconds on a CPU; saved to
    # OUTPUT_DIR/activity_classifier.pth and carried in every checkpoint). Needs
    # "ActivityClassifier" in MODEL.POSTPROCESSORS and MODEL.ACTIVITY.WEIGHTS = "".
    # tools/train_activity.py is the cross-validated way to train it on other data (e.g. MPII).
    _C.MODEL.ACTIVITY.FIT_ON_TRAIN_GT = False
    # Epochs of that fit
    _C.MODEL.ACTIVITY.FIT_EPOCHS = 20

    # --- datasets ------------------------------------------------------------------------
    # Extra COCO-format datasets to register: [[name, json_file, image_root], ...]
    _C.DATASETS.REGISTER = []

    # --- input augmentation (MultiPoseNet recipe; off by default) --------------------------
    _C.INPUT.ROTATION = CfgNode()
    # Random rotation in degrees drawn from [-ANGLE, ANGLE]; 0 disables it
    _C.INPUT.ROTATION.ANGLE = 0.0
    # Probability of applying the rotation to an image
    _C.INPUT.ROTATION.PROB = 0.5
    _C.INPUT.SCALE = CfgNode()
    # Random extra scale drawn from [MIN, MAX] after the resize; [1.0, 1.0] disables it
    _C.INPUT.SCALE.RANGE = [1.0, 1.0]

    # --- solver --------------------------------------------------------------------------
    # Final LR factor of the cosine schedule (LR_SCHEDULER_NAME = "WarmupCosineLR")
    _C.SOLVER.COSINE_END_FACTOR = 0.0
    # Betas of AdamW (SOLVER.OPTIMIZER = "AdamW")
    _C.SOLVER.BETAS = [0.9, 0.999]
    # Log to the console and metrics.json every this many iterations
    _C.SOLVER.LOG_PERIOD = 20

    # --- test / visualisation ------------------------------------------------------------
    # After evaluation, draw predictions for this many test images into OUTPUT_DIR/vis
    _C.TEST.VIS_NUM_IMAGES = 0
    # Score threshold of the drawn predictions
    _C.TEST.VIS_SCORE_THRESH = 0.5

    # --- tracking (multitask.tracking.PoseTracker; defaults for 25-30 fps video) ----------
    _C.TRACKING = CfgNode()
    # Weight of the box term (1 - IoU) of the track-detection matching cost
    _C.TRACKING.IOU_WEIGHT = 0.5
    # Weight of the keypoint term (1 - OKS) of that cost; the two weights are normalised to sum 1
    _C.TRACKING.OKS_WEIGHT = 0.5
    # A track and a detection whose matching cost (in [0, 1]) is above this are never paired
    _C.TRACKING.MAX_COST = 0.7
    # A new track is confirmed, and gets its ID, at its MIN_HITS-th consecutive matched frame
    _C.TRACKING.MIN_HITS = 3
    # A confirmed track is deleted at its MAX_MISSES-th consecutive frame without a detection
    _C.TRACKING.MAX_MISSES = 15
    # Detections with a box score below this are not tracked
    _C.TRACKING.MIN_SCORE = 0.5
    # Keypoints scored below this count as missing (OKS, smoothing); MODEL.ROI_KEYPOINT_HEAD.SCORE's
    _C.TRACKING.KEYPOINT_THRESHOLD = 0.05
    _C.TRACKING.SMOOTHING = CfgNode()
    # One-Euro keypoint filter (Casiez et al. 2012): cutoff frequency (Hz) of a keypoint at rest
    _C.TRACKING.SMOOTHING.MIN_CUTOFF = 1.0
    # Cutoff increase (Hz) per pixel/s of keypoint speed: higher, less lag and more jitter
    _C.TRACKING.SMOOTHING.BETA = 0.02
    # Cutoff frequency (Hz) of the filter's speed estimate
    _C.TRACKING.SMOOTHING.D_CUTOFF = 1.0
    # Each track's activity probabilities are averaged over this many seconds of frames
    _C.TRACKING.ACTIVITY_WINDOW_SECONDS = 1.0
    # Where a track's activity comes from: "window" (the per-frame probabilities averaged over
    # ACTIVITY_WINDOW_SECONDS) or "temporal" (a 1-D convolutional model over the track's last
    # TEMPORAL_FRAMES poses, multitask.tracking.temporal_activity; needs TEMPORAL_WEIGHTS)
    _C.TRACKING.ACTIVITY_MODEL = "window"
    # Weights file of the temporal model (tools/train_temporal_activity.py); its classes and pose
    # features must be MODEL.ACTIVITY.CLASSES, USE_VISIBILITY and GEOMETRY
    _C.TRACKING.TEMPORAL_WEIGHTS = ""
    # Frames the temporal model reads (its window, frames of the video); the weights file's
    _C.TRACKING.TEMPORAL_FRAMES = 24
    # A track with fewer frames than this gets its latest per-frame activity probabilities
    _C.TRACKING.TEMPORAL_MIN_FRAMES = 8


def get_cfg() -> CfgNode:
    """Return a fresh copy of the defaults with :func:`add_multitask_config` applied."""
    cfg = _C.clone()
    add_multitask_config(cfg)
    return cfg
