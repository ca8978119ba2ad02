#!/usr/bin/env python
"""Benchmark modulated deformable convolution on CPU: dense ``F.conv2d`` vs
``torchvision.ops.deform_conv2d`` vs ``deform_conv2d_fast``, forward and forward + backward.

The measurement lives in :mod:`multitask.benchmark.deform_conv` (see its docstring).

Example::

    python tools/bench_deform_conv.py --threads 2 --repeats 10
"""

from multitask.benchmark.deform_conv import main

if __name__ == "__main__":
    main()
