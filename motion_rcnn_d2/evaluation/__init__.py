"""Evaluation: motion and flow metrics (docs/method.md section 8) and the evaluator list builder."""
from .build import build_motion_evaluators
from .motion_evaluator import MotionEvaluator

__all__ = ["MotionEvaluator", "build_motion_evaluators"]
