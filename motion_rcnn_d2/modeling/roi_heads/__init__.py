"""RoI heads with the per-RoI motion branch and the motion head registry."""
from .motion_head import ROI_MOTION_HEAD_REGISTRY, FCMotionHead, build_motion_head
from .motion_roi_heads import MotionHeadMixin, MotionRes5ROIHeads, MotionROIHeads

__all__ = [
    "ROI_MOTION_HEAD_REGISTRY",
    "FCMotionHead",
    "build_motion_head",
    "MotionHeadMixin",
    "MotionROIHeads",
    "MotionRes5ROIHeads",
]
