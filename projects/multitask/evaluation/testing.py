"""Result printing and checking, as detectron2's ``evaluation/testing.py``."""
import logging
import pprint
from collections.abc import Mapping
from typing import Any, Dict

import numpy as np

__all__ = ["print_csv_format", "verify_results", "flatten_results_dict", "create_small_table"]


def print_csv_format(results: Mapping) -> None:
    """Log the main metrics of each task in a form that pastes into a spreadsheet.

    Metrics whose name contains "-" (per-category ones such as ``AP-walking``) are left out.
    """
    assert isinstance(results, Mapping) or not len(results), results
    logger = logging.getLogger(__name__)
    for task, res in results.items():
        if isinstance(res, Mapping):
            important_res = [(k, v) for k, v in res.items() if "-" not in k]
            logger.info("copypaste: Task: {}".format(task))
            logger.info("copypaste: " + ",".join([k[0] for k in important_res]))
            logger.info("copypaste: " + ",".join(["{0:.4f}".format(k[1]) for k in important_res]))
        else:
            logger.info(f"copypaste: {task}={res}")


def verify_results(cfg, results: Mapping) -> bool:
    """Check ``results`` against ``cfg.TEST.EXPECTED_RESULTS``.

    ``EXPECTED_RESULTS`` is a list of ``[task, metric, expected, tolerance]``; a check fails when
    the metric is missing, not finite, or ``|actual - expected| > tolerance``. Unlike detectron2
    this does not ``sys.exit`` on failure: it logs and returns ``False``.

    Returns:
        bool: whether all checks passed (``True`` when there is nothing to check).
    """
    expected_results = cfg.TEST.EXPECTED_RESULTS
    if not len(expected_results):
        return True
    logger = logging.getLogger(__name__)

    ok = True
    for entry in expected_results:
        task, metric, expected, tolerance = entry
        actual = results.get(task, {}).get(metric, None) if isinstance(results, Mapping) else None
        if actual is None:
            logger.error(f"Result verification: {task}/{metric} is missing from the results")
            ok = False
            continue
        try:
            actual = float(actual)
        except (TypeError, ValueError):
            ok = False
            logger.error(f"Result verification: {task}/{metric} = {actual!r} is not a number")
            continue
        if not np.isfinite(actual):
            ok = False
            logger.error(f"Result verification: {task}/{metric} = {actual} is not finite")
            continue
        diff = abs(actual - float(expected))
        if diff > float(tolerance):
            ok = False
            logger.error(
                f"Result verification: {task}/{metric} = {actual:.4f}, expected {expected} "
                f"+- {tolerance} (diff {diff:.4f})"
            )

    if not ok:
        logger.error("Result verification failed!")
        logger.error("Expected Results: " + str(expected_results))
        logger.error("Actual Results: " + pprint.pformat(results))
    else:
        logger.info("Results verification passed.")
    return ok


def flatten_results_dict(results: Mapping) -> Dict[str, Any]:
    """Flatten nested dicts: ``{"bbox": {"AP": 1.0}} -> {"bbox/AP": 1.0}``."""
    r: Dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, Mapping):
            for kk, vv in flatten_results_dict(v).items():
                r[k + "/" + kk] = vv
        else:
            r[k] = v
    return r


def create_small_table(small_dict: Mapping) -> str:
    """A one-row table of ``{name: value}`` in pipe (markdown) format, as detectron2 logs it."""
    from tabulate import tabulate

    keys, values = tuple(zip(*small_dict.items()))
    return tabulate(
        [values],
        headers=keys,
        tablefmt="pipe",
        floatfmt=".3f",
        stralign="center",
        numalign="center",
    )
