"""Small-model config overrides: ResNet-18, 32-channel FPN, one-conv mask head, two-conv keypoint
head, 7x7 poolers (14x14 masks, 28x28 heatmaps) and few proposals sampled. Seconds per iteration
on one CPU thread, with random weights.

* :data:`TINY_NETWORK`: the network and sampling sizes that the tests and the benchmark share;
* :data:`TINY_MODEL`: what the tests merge (``tests/tiny_model.py`` re-exports it): CPU, 20
  proposals per image at test time, and every box kept at test time (a random model still
  returns people);
* :data:`BENCHMARK_TINY_MODEL`: what ``tools/benchmark.py --tiny`` merges: 50 proposals per image
  at test time (the benchmark sets the device, the score threshold and the detections itself)
  and small post-processors (PRN and activity classifier).
"""

TINY_NETWORK = [
    "MODEL.RESNETS.DEPTH", 18,
    "MODEL.FPN.OUT_CHANNELS", 32,
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN", 200,
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", 50,
    "MODEL.RPN.PRE_NMS_TOPK_TEST", 100,
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE", 64,
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
    "MODEL.ROI_BOX_HEAD.FC_DIM", 64,
    "MODEL.ROI_MASK_HEAD.CONV_DIM", 16,
    "MODEL.ROI_MASK_HEAD.NUM_CONV", 1,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS", [16, 16],
    "MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION", 7,
    "MODEL.ROI_KEYPOINT_HEAD.HEATMAP_SIZE", 28,
]  # fmt: skip

TINY_MODEL = [
    "MODEL.DEVICE", "cpu",
    *TINY_NETWORK,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 20,
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
]  # fmt: skip

BENCHMARK_TINY_MODEL = [
    *TINY_NETWORK,
    "MODEL.RPN.POST_NMS_TOPK_TEST", 50,
    "MODEL.PRN.HIDDEN_DIM", 64,
    "MODEL.PRN.HEATMAP_SIZE", [28, 18],
    "MODEL.ACTIVITY.HIDDEN_DIMS", [64, 16],
]  # fmt: skip
