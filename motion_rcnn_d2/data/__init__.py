"""Data: file formats, the motion data sets (registered on import) and the paired mapper."""
from . import formats  # noqa: F401
from .datasets import (prepare_datasets, register_from_arguments, register_kitti2015,
                       register_motion_dataset)
from .mapper import MotionDatasetMapper

__all__ = ["MotionDatasetMapper", "prepare_datasets", "register_from_arguments",
           "register_kitti2015", "register_motion_dataset"]
