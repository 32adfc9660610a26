"""Training and inference machinery around Detectron2's engine.

- checkpoint: MotionCheckpointer, checkpoint loading with stem inflation (3 -> 6/12 channels)
  and atomic saving; weights: the torchvision name mapping and the stem inflation themselves;
- predictor: MotionPredictor, the frame-pair counterpart of DefaultPredictor;
- launch: multi-process training on GPUs (Detectron2's launch) and on CPUs (gloo), and
  create_ddp_model for CPU models;
- resume: ResumableTrainLoader, a training data stream that --resume continues exactly;
- optimizer: build_motion_optimizer (SGD or AdamW, the heads' LR factors);
- head_stats: HeadStatsHook, activation and gradient statistics of chosen modules;
- export: what of each meta-architecture goes into a deployment artefact, and running one
  (tools/export_model.py).

The names in __all__ are re-exported here; import anything else from its module.
"""
from .checkpoint import MotionCheckpointer
from .launch import create_ddp_model, launch
from .predictor import MotionPredictor
from .resume import ResumableTrainLoader, build_resumable_train_loader

__all__ = ["MotionCheckpointer", "MotionPredictor", "ResumableTrainLoader",
           "build_resumable_train_loader", "create_ddp_model", "launch"]
