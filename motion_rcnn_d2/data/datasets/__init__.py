"""Loaders of the motion data sets; importing this package registers the built-in names."""
from .builtin import (
    datasets_root,
    prepare_datasets,
    register_from_arguments,
    register_all_motion_datasets,
    register_kitti2015,
    register_motion_dataset,
)
from .kitti2015 import load_kitti2015
from .synthetic import ensure_synthetic_world, load_synthetic
from .vkitti1 import load_vkitti1
from .vkitti2 import load_vkitti2, load_vkitti2_sequence

register_all_motion_datasets()

__all__ = [
    "datasets_root",
    "ensure_synthetic_world",
    "load_kitti2015",
    "load_synthetic",
    "load_vkitti1",
    "load_vkitti2",
    "load_vkitti2_sequence",
    "prepare_datasets",
    "register_from_arguments",
    "register_all_motion_datasets",
    "register_kitti2015",
    "register_motion_dataset",
]
