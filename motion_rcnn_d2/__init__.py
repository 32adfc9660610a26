"""Motion R-CNN for Detectron2: importing this package registers every component."""
from . import compat

compat.install()

from .config import add_motion_rcnn_config  # noqa: E402

# imported for registration in Detectron2's registries and catalogs
from . import data, modeling  # noqa: E402,F401
from .data import MotionDatasetMapper, register_kitti2015, register_motion_dataset  # noqa: E402
from .engine import MotionCheckpointer, MotionPredictor  # noqa: E402
from .evaluation import MotionEvaluator  # noqa: E402

__all__ = [
    "add_motion_rcnn_config",
    "MotionCheckpointer",
    "MotionDatasetMapper",
    "MotionEvaluator",
    "MotionPredictor",
    "register_kitti2015",
    "register_motion_dataset",
]
__version__ = "0.1.0"
