"""Config overrides shared by the tests that build a model from random weights: ResNet-18,
32-channel FPN, one-conv mask head, two-conv keypoint head, 7x7 poolers (14x14 masks, 28x28
heatmaps), few proposals sampled, and every box kept at test time (a random model still returns
people). Seconds per iteration on one CPU thread."""

TINY_MODEL = [
    "MODEL.DEVICE", "cpu",
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 20,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_MASK_HEAD.NUM_CONV", 1,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16],
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE", 28,
]  # fmt: skip
