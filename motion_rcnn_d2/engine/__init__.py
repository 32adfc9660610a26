"""Checkpoint loading (stem inflation) and the frame-pair predictor."""
from .checkpoint import MotionCheckpointer
from .launch import create_ddp_model, launch
from .predictor import MotionPredictor
from .resume import ResumableTrainLoader, build_resumable_train_loader

__all__ = ["MotionCheckpointer", "MotionPredictor", "ResumableTrainLoader",
           "build_resumable_train_loader", "create_ddp_model", "launch"]
