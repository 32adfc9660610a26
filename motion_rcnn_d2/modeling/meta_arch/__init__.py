from .flownets import FlowNetS  # noqa: F401  (registers the FlowNetS meta-architecture)
from .sfmnet import SfMNet  # noqa: F401  (registers the SfM-Net meta-architecture)
from .motion_rcnn import MotionRCNN  # noqa: F401  (registers the Motion R-CNN meta-architecture)
