"""Logging to the console and ``OUTPUT_DIR/log.txt`` (one file per rank beyond rank 0)."""
import logging
import os
import sys
from typing import Optional


class _ColorFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        msg = super().formatMessage(record)
        if record.levelno >= logging.ERROR:
            return "\033[31mERROR\033[0m " + msg
        if record.levelno == logging.WARNING:
            return "\033[33mWARNING\033[0m " + msg
        return msg


def setup_logger(
    output: Optional[str] = None, distributed_rank: int = 0, name: str = "multitask"
) -> logging.Logger:
    """Configure the ``name`` logger: INFO to stdout on rank 0, DEBUG to ``output/log.txt``.

    ``output`` may be a directory (``log.txt`` inside it) or a file name. Idempotent.
    """
    logger = logging.getLogger(name)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
    fmt = "[%(asctime)s %(name)s]: %(message)s"
    datefmt = "%m/%d %H:%M:%S"
    if distributed_rank == 0:
        ch = logging.StreamHandler(stream=sys.stdout)
        ch.setLevel(logging.INFO)
        color = sys.stdout.isatty()
        ch.setFormatter((_ColorFormatter if color else logging.Formatter)(fmt, datefmt=datefmt))
        logger.addHandler(ch)
    if output is not None:
        filename = output if output.endswith((".txt", ".log")) else os.path.join(output, "log.txt")
        if distributed_rank > 0:
            filename = filename + f".rank{distributed_rank}"
        os.makedirs(os.path.dirname(os.path.abspath(filename)), exist_ok=True)
        fh = logging.FileHandler(filename, mode="a")
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter(fmt, datefmt=datefmt))
        logger.addHandler(fh)
    return logger
