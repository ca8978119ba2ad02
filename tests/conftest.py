"""Shared pytest options and fixtures.

``--runslow`` enables tests marked ``slow`` (accuracy runs). ``one_thread`` and ``two_threads``
set torch's intra-op threads for a whole test module (a module opts in with
``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny tensors run as fast on one thread,
and much faster on a busy machine.
"""
from contextlib import contextmanager

import pytest
import torch


@contextmanager
def torch_threads(n: int):
    """torch's intra-op threads set to ``n`` (at most what it had) inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, before)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def two_threads():
    with torch_threads(2):
        yield


def pytest_addoption(parser):
    parser.addoption(
        "--runslow", action="store_true", default=False, help="run slow accuracy tests"
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow accuracy test: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)
