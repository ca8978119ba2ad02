"""One module per section of the benchmark; each ``section_*`` function prints its table(s) to
stdout and returns the section's JSON entry.

* :mod:`.inference`: one image through ours vs torchvision's R-CNNs;
* :mod:`.train`: one training iteration of each;
* :mod:`.postproc`: the post-processors' share of our full model's inference;
* :mod:`.memory`: peak memory of one inference, one fresh process per model;
* :mod:`.ops`: deformable conv (with :mod:`.roi_align`: ROIAlign), ours vs torchvision;
* :mod:`.amp`: our training iteration in float32 vs under ``SOLVER.AMP``'s autocast.
"""
