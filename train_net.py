#!/usr/bin/env python
"""Train and evaluate Motion R-CNN, FlowNetS and SfM-Net with Detectron2's machinery.

    python train_net.py --config-file configs/synthetic/motion_rcnn_R18_C6_FPN_cpu.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS output/model_final.pth
    python train_net.py --config-file ... --resume
    python train_net.py --config-file ... --eval-only --register my_world=datasets/my_world \
        MODEL.WEIGHTS output/model_final.pth DATASETS.TEST "('my_world',)"
    python train_net.py --config-file ... --num-gpus 8   (or --num-machines/--machine-rank/--dist-url)

--num-gpus N with MODEL.DEVICE "cpu" trains in N CPU processes (gloo; engine/launch.py).
--register NAME=ROOT (repeatable) registers a data set in the Virtual KITTI 2 layout (e.g. a world
written by tools/generate_synthetic.py) in every process, for DATASETS.TRAIN / TEST.

The Trainer overrides builders: data loaders with MotionDatasetMapper (training: a
ResumableTrainLoader, so --resume continues the exact data stream; engine/resume.py), the
motion (+ COCO) evaluators and the checkpointer that inflates 3-channel stems and saves
atomically. Its checkpoints also hold the optimizer state.
"""
import logging
import os
from functools import partial

# OpenMP threads that spin while they wait slow a CPU run down ~10x whenever another process
# (a data-loader worker) wants the same cores; waiting passively costs nothing measurable.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import motion_rcnn_d2  # noqa: F401  (first: adapts the Detectron2 build, registers components)
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.compat import (add_optimizer_state, cpu_ddp_support, load_optimizer_state,
                                   replace_checkpointer)
from motion_rcnn_d2.data import MotionDatasetMapper, prepare_datasets, register_from_arguments
from motion_rcnn_d2.engine import MotionCheckpointer
from motion_rcnn_d2.engine.head_stats import HeadStatsHook
from motion_rcnn_d2.engine.optimizer import build_motion_optimizer
from motion_rcnn_d2.engine.launch import launch
from motion_rcnn_d2.engine.resume import ResumableTrainLoader, build_resumable_train_loader
from motion_rcnn_d2.evaluation import build_motion_evaluators


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        with cpu_ddp_support():  # DistributedDataParallel also for a model on the CPU
            super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg, model):
        return build_motion_optimizer(cfg, model)

    @classmethod
    def build_train_loader(cls, cfg):
        return build_resumable_train_loader(cfg, MotionDatasetMapper(cfg, is_train=True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(
            cfg, dataset_name, mapper=MotionDatasetMapper(cfg, is_train=False)
        )

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_motion_evaluators(cfg, dataset_name, output_folder)

    def build_hooks(self):
        # ours instead of the DetectionCheckpointer of DefaultTrainer.__init__, before the
        # PeriodicCheckpointer hook captures it; with the data stream's position
        extra = ({"train_loader": self.data_loader}
                 if isinstance(self.data_loader, ResumableTrainLoader) else {})
        replace_checkpointer(self, partial(MotionCheckpointer.from_config, self.cfg), **extra)
        hooks = super().build_hooks()
        if self.cfg.DIAGNOSTICS.PERIOD > 0:
            # before the writers (the last hooks), so its scalars reach metrics.json
            hooks.insert(-1, HeadStatsHook(self.model, self.cfg.DIAGNOSTICS.MODULES,
                                           self.cfg.DIAGNOSTICS.PERIOD))
        return hooks

    def state_dict(self):  # with the optimizer's state on every Detectron2 version
        return add_optimizer_state(super().state_dict(), self.optimizer)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        load_optimizer_state(state_dict, self.optimizer)


def load_config(args):
    """The config of --config-file and the command line's KEY VALUE pairs."""
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    try:
        cfg.merge_from_file(args.config_file)
        cfg.merge_from_list(args.opts)
    except (KeyError, AssertionError) as error:  # yacs: "Non-existent (config) key: KEY"
        if not str(error.args[0] if error.args else "").startswith("Non-existent"):
            raise
        where = (f"in '{args.config_file}' or its _BASE_" if isinstance(error, KeyError)
                 else "on the command line")
        raise KeyError(
            f"{error.args[0]} ({where}): no such key in "
            "Detectron2's config (detectron2/config/defaults.py) or Motion R-CNN's "
            "(motion_rcnn_d2/config.py); check its spelling and section.") from None
    return cfg


def setup(args):
    cfg = load_config(args)
    cfg.freeze()
    default_setup(cfg, args)
    # the plugin's own log lines (the motion metric table) go to the same console and log file
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="motion_rcnn_d2")
    return cfg


def main(args):
    register_from_arguments(args.register)
    cfg = setup(args)
    # Generates the synthetic world on first use (main process only, others wait).
    prepare_datasets(list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST))
    if args.eval_only:
        model = Trainer.build_model(cfg)
        MotionCheckpointer.from_config(cfg, model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        res = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, res)
        return res

    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def argument_parser():
    """Detectron2's default arguments plus --register NAME=ROOT."""
    parser = default_argument_parser()
    parser.add_argument("--register", action="append", default=[], metavar="NAME=ROOT",
                        help="register the data set in the Virtual KITTI 2 layout under ROOT as "
                             "NAME (repeatable), e.g. for DATASETS.TEST \"('NAME',)\"")
    return parser


if __name__ == "__main__":
    args = argument_parser().parse_args()
    logging.getLogger(__name__).info("Command line arguments: %s", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
        device=load_config(args).MODEL.DEVICE,
    )
