"""Speed and memory benchmark of the multi-task R-CNN against torchvision's R-CNNs.

``python tools/benchmark.py`` runs it (see :mod:`multitask.benchmark.cli` and
``docs/benchmarks.md``). Modules:

* :mod:`~multitask.benchmark.cli`: argument parsing, section selection, the JSON output;
* :mod:`~multitask.benchmark.settings`: the :class:`Settings` every section reads;
* :mod:`~multitask.benchmark.harness`: timers, medians / IQR, resident memory, threads;
* :mod:`~multitask.benchmark.report`: environment header and table formatting;
* :mod:`~multitask.benchmark.candidates`: our models and torchvision's R-CNNs, built alike;
* :mod:`~multitask.benchmark.inputs`: synthetic images and people;
* :mod:`~multitask.benchmark.deform_conv`: deformable conv timing (also
  ``tools/bench_deform_conv.py``);
* :mod:`~multitask.benchmark.tiny_model`: the small-model config overrides shared with the tests;
* :mod:`~multitask.benchmark.sections`: one module per section of the benchmark.
"""
