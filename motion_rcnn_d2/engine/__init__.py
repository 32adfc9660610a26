"""Training and inference machinery around Detectron2's engine.

- checkpoint: MotionCheckpointer, checkpoint loading with stem inflation (3 -> 6/12 channels)
  and atomic saving, reading files safely, the fit / resume check; weights: the conversions
  themselves (torchvision names, Detectron2's name heuristics per module, stem inflation);
- predictor: MotionPredictor, the frame-pair counterpart of DefaultPredictor;
- launch: multi-process training on GPUs (Detectron2's launch) and on CPUs (gloo); the
  trainer's side (create_ddp_model for CPU models, re-exported here) is in motion_rcnn_d2.compat;
- resume: ResumableTrainLoader, a training data stream that --resume continues exactly;
- optimizer: build_motion_optimizer (SGD or AdamW, the heads' LR factors);
- head_stats: HeadStatsHook, activation and gradient statistics of chosen modules;
- export: what of each meta-architecture goes into a deployment artefact, and running one
  (tools/export_model.py).

The names in __all__ are re-exported here; import anything else from its module.
"""
from ..compat import create_ddp_model
from .checkpoint import MotionCheckpointer
from .launch import launch
from .predictor import MotionPredictor
from .resume import ResumableTrainLoader, build_resumable_train_loader

__all__ = ["MotionCheckpointer", "MotionPredictor", "ResumableTrainLoader",
           "build_resumable_train_loader", "create_ddp_model", "launch"]
