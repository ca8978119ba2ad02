#!/usr/bin/env python
"""Train and evaluate a multitask model, detectron2-style.

    python tools/train_net.py --config-file configs/COCO-MultiTask/<cfg>.yaml [--num-gpus 8]
    python tools/train_net.py --config-file <cfg>.yaml --resume
    python tools/train_net.py --config-file <cfg>.yaml --eval-only MODEL.WEIGHTS model_final.pth

Also runs under ``torchrun --nproc_per_node N tools/train_net.py ...``.
"""
import logging
from datetime import timedelta

from multitask.engine import (
    MultiTaskCheckpointer,
    Trainer,
    default_argument_parser,
    default_setup,
    launch,
    setup_cfg,
)
from multitask.engine.postprocessor_fit import check_postprocessor_weights
from multitask.evaluation import verify_results
from multitask.modeling import build_model
from multitask.utils import comm

logger = logging.getLogger("multitask")


def main(args):
    cfg = setup_cfg(args)
    default_setup(cfg, args)
    if args.eval_only:
        model = build_model(cfg)
        checkpointer = MultiTaskCheckpointer(model, save_dir=cfg.OUTPUT_DIR)
        checkpointer.resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        check_postprocessor_weights(cfg, model, checkpointer.last_report)
        results = Trainer.test(cfg, model)
        if comm.is_main_process() and cfg.TEST.EXPECTED_RESULTS:
            if not verify_results(cfg, results):
                raise SystemExit("Evaluation results are below TEST.EXPECTED_RESULTS")
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def cli(argv=None):
    args = default_argument_parser().parse_args(argv)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        timeout=timedelta(seconds=args.dist_timeout),
        args=(args,),
    )


if __name__ == "__main__":
    cli()
