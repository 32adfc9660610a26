"""Motion R-CNN for Detectron2: importing this package registers every component."""
from . import compat

compat.install()

from .config import add_motion_rcnn_config  # noqa: E402

# imported only for registration in Detectron2's registries and catalogs
from . import data, modeling  # noqa: E402,F401

__all__ = ["add_motion_rcnn_config"]
__version__ = "0.1.0"
