"""KITTI 2015 scene flow (training or testing set) as frame-pair dataset dicts.

Layout under ``root`` (data_scene_flow.zip and data_scene_flow_calib.zip extracted there)::

    <split>/image_2/%06d_10.png, %06d_11.png      frames t and t+1 (left colour camera)
    <split>/calib_cam_to_cam/%06d.txt             "P_rect_02: 12 numbers" etc. (data/calibration.py)
    training/flow_occ/%06d_10.png                 KITTI flow PNG, all pixels
    training/flow_noc/%06d_10.png                 KITTI flow PNG, non-occluded pixels
    training/disp_occ_0/%06d_10.png               disparity of frame t (value / 256 px, 0 = none)
    training/disp_occ_1/%06d_10.png               disparity at t+1 of each frame-t pixel (in
                                                  frame t's pixel grid, for the D2 / SF metrics)
    training/disp_noc_0/, disp_noc_1/ (optional)  the same over the non-occluded pixels
    training/obj_map/%06d_10.png                  vehicle ids (0 = background)

KITTI has no dense depth. The depth of frame t is Z = fx b / d from a disparity folder of the
user's choice (``disparity_dir``): KITTI's sparse GT ``disp_occ_0`` (the default on the training
set) or a stereo method's ``%06d_10.png`` in KITTI's 16-bit format; d = 0 is invalid (depth 0).
``disparity_next_dir`` optionally gives the depth of frame t+1 in its own view (a stereo method's
``%06d_11.png``; KITTI's ``disp_occ_1`` is NOT that: it lies in frame t's grid).
K = P_rect_02[:, :3] and fx b come from calib_cam_to_cam (the mapper converts: the dict carries
``depth_format`` "kitti_disparity" and ``disparity_to_depth`` = fx b in px m). The log says
which folder is used.

Training dicts carry the GT flow and ``obj_map_file_name``, ``disparity_gt_file_name``,
``disparity_next_gt_file_name`` (for `KittiSceneFlowEvaluator`), ``flow_noc_file_name`` and,
where the folders exist, ``disparity_noc_gt_file_name`` / ``disparity_next_noc_gt_file_name``
(its "noc" figures over the non-occluded GT pixels, e.g. "D1-all_noc"; a missing disp_noc folder
only leaves its key out, a missing file in one that exists is an error), and the obj_map objects as
annotations (class "Car", box and mask, ``track_id`` = id) without ``motion``; there is no
``camera_motion``. Testing dicts have frames, K, fx b and depth (when a disparity folder is given).
"""
import logging
import os

import numpy as np
from PIL import Image

from ..calibration import read_kitti_calib
from ..formats import read_instance_png
from .common import id_map_annotations, list_files, require_file

__all__ = ["load_kitti2015", "load_kitti2015_folder", "GT_DISPARITY_DIR"]

GT_DISPARITY_DIR = "disp_occ_0"
_GT_FOLDERS = ("flow_occ", "flow_noc", "disp_occ_0", "disp_occ_1", "obj_map")
_NOC_DISPARITY_FOLDERS = {"disparity_noc_gt_file_name": "disp_noc_0",  # optional
                          "disparity_next_noc_gt_file_name": "disp_noc_1"}


def _folder_files(folder, dataset_name):
    """A function file name -> full path in ``folder`` that raises FileNotFoundError (naming the
    file and the data set) when the file is missing; the folder is listed once."""
    files = list_files(folder, dataset_name)

    def path(file_name):
        full = os.path.join(folder, file_name)
        if file_name not in files:
            require_file(full, dataset_name)
        return full

    return path


def load_kitti2015(root, classes=("Car", "Van"), dataset_name="kitti2015", split="training",
                   disparity_dir=None, disparity_next_dir=None):
    """One dict per pair (%06d_10, %06d_11) of ``root/<split>``.

    Args:
        root: the folder holding ``training/`` and / or ``testing/``.
        classes: the data set's classes; obj_map objects are "Car".
        split: "training" (with ground truth) or "testing" (frames and calibration only).
        disparity_dir: folder of ``%06d_10.png`` disparities for the depth of frame t; a relative
            path is taken under ``root/<split>``. Default: ``disp_occ_0`` (KITTI's GT) on the
            training set, none on the testing set (dicts without depth).
        disparity_next_dir: folder of ``%06d_11.png`` disparities of frame t+1 (its own view), or
            None.
    Raises:
        FileNotFoundError naming the missing folder or file (and the data set).
    """
    if split not in ("training", "testing"):
        raise ValueError(f"Data set '{dataset_name}': split must be 'training' or 'testing', "
                         f"got {split!r}.")
    return load_kitti2015_folder(os.path.join(root, split), split == "training", classes,
                                 dataset_name, disparity_dir, disparity_next_dir)


def load_kitti2015_folder(folder, ground_truth, classes=("Car", "Van"), dataset_name="kitti2015",
                          disparity_dir=None, disparity_next_dir=None):
    """`load_kitti2015` on one split folder of any name (e.g. ``<KITTI>/testing``), with or
    without the training set's ground truth files; a relative ``disparity_dir`` is taken under
    ``folder``."""
    if "Car" not in classes:
        raise ValueError(f"Data set '{dataset_name}': classes {classes} must contain 'Car'.")
    image = _folder_files(os.path.join(folder, "image_2"), dataset_name)
    calib = _folder_files(os.path.join(folder, "calib_cam_to_cam"), dataset_name)
    gt = {name: _folder_files(os.path.join(folder, name), dataset_name)
          for name in (_GT_FOLDERS if ground_truth else ())}
    noc_disparities = {key: _folder_files(os.path.join(folder, name), dataset_name)
                       for key, name in _NOC_DISPARITY_FOLDERS.items()
                       if ground_truth and os.path.isdir(os.path.join(folder, name))}
    if disparity_dir is None and ground_truth:
        disparity_dir = GT_DISPARITY_DIR
    sources = {}
    logger = logging.getLogger(__name__)
    for key, directory, suffix in (("depth_file_name", disparity_dir, "_10"),
                                   ("depth_file_name_next", disparity_next_dir, "_11")):
        if directory is not None:
            directory = os.path.join(folder, directory)
            sources[key] = (_folder_files(directory, dataset_name), suffix)
            kind = ("KITTI's sparse ground truth" if os.path.normpath(directory) ==
                    os.path.normpath(os.path.join(folder, GT_DISPARITY_DIR)) else "given")
            logger.info(f"Data set '{dataset_name}': depth of frame "
                        f"{'t' if suffix == '_10' else 't+1'} = fx b / d from the disparities d "
                        f"({kind}) in '{directory}'; fx, b from calib_cam_to_cam.")
    if not sources:
        logger.warning(
            f"Data set '{dataset_name}': no disparity folder, so no depth: models that need depth "
            "(Motion R-CNN, SfM-Net with given depth) cannot run on it; pass disparity_dir.")
    names = list_files(os.path.join(folder, "image_2"), dataset_name)
    indices = sorted(int(n[:6]) for n in names if n.endswith("_10.png") and n[:6].isdigit())
    if not indices:
        raise FileNotFoundError(
            f"Data set '{dataset_name}': no frames '%06d_10.png' in "
            f"'{os.path.join(folder, 'image_2')}'.")
    car = list(classes).index("Car")
    dicts = []
    for index in indices:
        name = f"{index:06d}_10.png"
        intrinsics, baseline = read_kitti_calib(calib(f"{index:06d}.txt"))
        record = {
            "file_name": image(name),
            "file_name_next": image(f"{index:06d}_11.png"),
            "image_id": f"{index:06d}",
            "intrinsics": intrinsics.tolist(),
            "disparity_to_depth": float(intrinsics[0, 0] * baseline),
            "depth_format": "kitti_disparity",
        }
        for key, (path, suffix) in sources.items():
            record[key] = path(f"{index:06d}{suffix}.png")
        if not ground_truth:
            with Image.open(record["file_name"]) as frame:  # reads the header only
                record["width"], record["height"] = frame.size
        if ground_truth:
            ids = read_instance_png(gt["obj_map"](name))
            values = [v for v in np.unique(ids) if v > 0]
            annotations = id_map_annotations(ids, values)
            for annotation, value in zip(annotations, values):
                annotation.update(category_id=car, track_id=int(value))
            record.update({
                "flow_file_name": gt["flow_occ"](name),
                "flow_noc_file_name": gt["flow_noc"](name),
                "flow_format": "kitti",
                "obj_map_file_name": gt["obj_map"](name),
                "disparity_gt_file_name": gt["disp_occ_0"](name),
                "disparity_next_gt_file_name": gt["disp_occ_1"](name),
                "height": int(ids.shape[0]),
                "width": int(ids.shape[1]),
                "annotations": annotations,
            })
            record.update({key: path(name) for key, path in noc_disparities.items()})
        dicts.append(record)
    return dicts
