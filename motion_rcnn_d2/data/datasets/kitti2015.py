"""KITTI 2015 scene flow (training set) as frame-pair dataset dicts, for flow evaluation.

Layout under ``root`` (data_scene_flow.zip and data_scene_flow_calib.zip extracted there)::

    training/image_2/%06d_10.png, %06d_11.png     frames t and t+1 (left colour camera)
    training/flow_occ/%06d_10.png                 KITTI flow PNG, all pixels
    training/flow_noc/%06d_10.png                 KITTI flow PNG, non-occluded pixels
    training/disp_occ_0/%06d_10.png               disparity of frame t (value / 256 px, 0 = none)
    training/obj_map/%06d_10.png                  vehicle ids (0 = background)
    training/calib_cam_to_cam/%06d.txt            "P_rect_02: 12 numbers" etc.

K = P_rect_02[:, :3]; baseline b = (P_rect_02[0, 3] - P_rect_03[0, 3]) / fx (metres); depth =
fx b / disparity (the mapper converts: the dict carries ``depth_format`` "kitti_disparity" and
``disparity_to_depth`` = fx b in px m). KITTI 2015 has no depth of frame t+1 in its own view and
no 3D motion: annotations carry the obj_map objects (class "Car", box and mask, ``track_id`` = id)
without ``motion``, and there is no ``camera_motion``.
"""
import os

import numpy as np

from ..formats import DataFormatError, read_instance_png
from .common import id_map_annotations, list_files, require_file

__all__ = ["load_kitti2015", "read_kitti_calibration"]


def read_kitti_calibration(path, dataset_name="kitti2015"):
    """Parse a KITTI ``calib_cam_to_cam`` file -> (K (3,3) list, fx * baseline (px m)).

    Lines are "key: numbers"; P_rect_02 and P_rect_03 (3x4, row-major) are required.
    """
    require_file(path, dataset_name)
    values = {}
    with open(path) as f:
        for number, line in enumerate(f, start=1):
            if ":" not in line:
                if line.strip():
                    raise DataFormatError(
                        f"{path}:{number}: malformed line (expected 'key: values').")
                continue
            key, rest = line.split(":", 1)
            if key.strip() not in ("P_rect_02", "P_rect_03"):
                continue
            try:
                numbers = [float(v) for v in rest.split()]
            except ValueError:
                raise DataFormatError(
                    f"{path}:{number}: '{key}' has a non-numeric value.") from None
            if len(numbers) != 12:
                raise DataFormatError(
                    f"{path}:{number}: '{key}' needs 12 numbers (3x4 matrix), got {len(numbers)}.")
            values[key.strip()] = np.array(numbers).reshape(3, 4)
    for key in ("P_rect_02", "P_rect_03"):
        if key not in values:
            raise DataFormatError(f"'{path}': no '{key}' line (data set '{dataset_name}').")
    p2, p3 = values["P_rect_02"], values["P_rect_03"]
    fx = p2[0, 0]
    baseline = (p2[0, 3] - p3[0, 3]) / fx
    if not baseline > 0:
        raise DataFormatError(
            f"'{path}': stereo baseline (P_rect_02[0,3] - P_rect_03[0,3]) / fx = {baseline} m is "
            "not positive.")
    return p2[:, :3].tolist(), float(fx * baseline)


def load_kitti2015(root, classes=("Car", "Van"), dataset_name="kitti2015"):
    """One dict per pair (%06d_10, %06d_11) of ``root/training``."""
    train = os.path.join(root, "training")
    folders = ("image_2", "flow_occ", "flow_noc", "disp_occ_0", "obj_map", "calib_cam_to_cam")
    listing = {name: list_files(os.path.join(train, name), dataset_name) for name in folders}
    if "Car" not in classes:
        raise ValueError(f"Data set '{dataset_name}': classes {classes} must contain 'Car'.")
    car = list(classes).index("Car")

    def path(folder, name):
        full = os.path.join(train, folder, name)
        if name not in listing[folder]:
            require_file(full, dataset_name)
        return full

    indices = sorted(int(n[:6]) for n in listing["image_2"]
                     if n.endswith("_10.png") and n[:6].isdigit())
    if not indices:
        raise FileNotFoundError(
            f"Data set '{dataset_name}': no frames '%06d_10.png' in "
            f"'{os.path.join(train, 'image_2')}'.")
    dicts = []
    for index in indices:
        name = f"{index:06d}_10.png"
        intrinsics, disparity_to_depth = read_kitti_calibration(
            path("calib_cam_to_cam", f"{index:06d}.txt"), dataset_name)
        ids = read_instance_png(path("obj_map", name))
        values = [v for v in np.unique(ids) if v > 0]
        annotations = id_map_annotations(ids, values)
        for annotation, value in zip(annotations, values):
            annotation.update(category_id=car, track_id=int(value))
        dicts.append({
            "file_name": path("image_2", name),
            "file_name_next": path("image_2", f"{index:06d}_11.png"),
            "depth_file_name": path("disp_occ_0", name),
            "depth_format": "kitti_disparity",
            "disparity_to_depth": disparity_to_depth,
            "flow_file_name": path("flow_occ", name),
            "flow_noc_file_name": path("flow_noc", name),
            "flow_format": "kitti",
            "height": int(ids.shape[0]),
            "width": int(ids.shape[1]),
            "image_id": f"{index:06d}",
            "intrinsics": intrinsics,
            "annotations": annotations,
        })
    return dicts
