"""Command-line parsing and run setup shared by the tools, as detectron2's ``engine.defaults``."""

import argparse
import logging
import os
import random
import re
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from ..config import get_cfg
from ..utils import comm
from ..utils.logger import setup_logger


def default_argument_parser(description: str = "multitask training and evaluation"):
    """detectron2's flags: ``--config-file --resume --eval-only --num-gpus --num-machines
    --machine-rank --dist-url`` and trailing ``KEY VALUE`` config overrides."""
    parser = argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Examples:\n"
            "  Train on 8 GPUs:   train_net.py --config-file cfg.yaml --num-gpus 8\n"
            "  Resume:            train_net.py --config-file cfg.yaml --resume\n"
            "  Evaluate:          train_net.py --config-file cfg.yaml --eval-only "
            "MODEL.WEIGHTS model.pth\n"
            "  On a CPU-only machine --num-gpus N starts N CPU processes (gloo)."
        ),
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="resume from OUTPUT_DIR/last_checkpoint (model, optimizer, scheduler, iteration)",
    )
    parser.add_argument("--eval-only", action="store_true", help="only evaluate MODEL.WEIGHTS")
    parser.add_argument("--num-gpus", type=int, default=1, help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="rank of this machine")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="initialization URL for torch.distributed ('auto' = a free local port)",
    )
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="how long a process waits for the others to join (and for collective operations) "
        "before it fails with a message naming the address",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100",
    )
    return parser


# a config key (MODEL.WEIGHTS, SEED)
_CFG_KEY = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)*$")


def parse_args_with_trailing_overrides(parser: argparse.ArgumentParser,
                                       argv: Optional[Sequence[str]] = None,
                                       value_options: Sequence[str] = ()) -> argparse.Namespace:
    """``parser.parse_args`` for a command line that ends in ``KEY VALUE`` config overrides,
    which land in ``args.opts`` (after any given with ``--opts``).

    The first token shaped like a config key (``MODEL.WEIGHTS``) that is not an existing path
    and not the value of one of ``value_options`` starts the overrides, so they may follow an
    option that takes several values (``--input a.jpg b.jpg MODEL.WEIGHTS m.pth``). A ``--opts``
    token ends the search (argparse takes what follows it). ``argv``: default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    split = len(argv)
    for i, tok in enumerate(argv):
        if tok == "--opts":
            break
        after_value_option = i > 0 and argv[i - 1] in value_options
        if _CFG_KEY.match(tok) and not after_value_option and not os.path.exists(tok):
            split = i
            break
    args = parser.parse_args(argv[:split])
    args.opts = list(getattr(args, "opts", None) or []) + argv[split:]
    return args


def setup_cfg(args, freeze: bool = True):
    """Defaults <- ``--config-file`` <- trailing overrides; registers ``DATASETS.REGISTER``."""
    cfg = get_cfg()
    if args.config_file:
        if not os.path.isfile(args.config_file):
            raise FileNotFoundError(f"--config-file '{args.config_file}' does not exist")
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts or [])
    if freeze:
        cfg.freeze()
    return cfg


def default_setup(cfg, args) -> logging.Logger:
    """Create OUTPUT_DIR, set up logging (``log.txt``), log the environment and config, write
    the merged ``config.yaml``, seed the RNGs."""
    from ..data import register_datasets_from_cfg

    rank = comm.get_rank()
    output_dir = cfg.OUTPUT_DIR
    if comm.is_main_process() and output_dir:
        os.makedirs(output_dir, exist_ok=True)
    comm.synchronize()
    logger = setup_logger(output_dir, distributed_rank=rank, name="multitask")
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info(
        "Environment: python %s, torch %s, CUDA available: %s",
        sys.version.split()[0],
        torch.__version__,
        torch.cuda.is_available(),
    )
    logger.info("Command line arguments: %s", args)
    if comm.is_main_process() and output_dir:
        path = os.path.join(output_dir, "config.yaml")
        with open(path, "w") as f:
            f.write(cfg.dump())
        logger.info("Full config saved to %s", path)
    seed = cfg.SEED if cfg.SEED >= 0 else int.from_bytes(os.urandom(2), "big")
    seed_all(seed + rank)
    register_datasets_from_cfg(cfg)
    if cfg.CUDNN_BENCHMARK:
        torch.backends.cudnn.benchmark = True
    return logger


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
