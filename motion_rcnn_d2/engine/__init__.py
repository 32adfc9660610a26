"""Checkpoint loading (stem inflation) and the frame-pair predictor."""
from .checkpoint import MotionCheckpointer
from .predictor import MotionPredictor

__all__ = ["MotionCheckpointer", "MotionPredictor"]
