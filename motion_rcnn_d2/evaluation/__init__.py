"""Evaluation: motion and flow metrics (docs/method.md section 8), KITTI 2015's scene flow metrics
and the evaluator list builder."""
from .build import build_motion_evaluators
from .kitti_evaluator import KittiSceneFlowEvaluator
from .motion_evaluator import MotionEvaluator

__all__ = ["KittiSceneFlowEvaluator", "MotionEvaluator", "build_motion_evaluators"]
