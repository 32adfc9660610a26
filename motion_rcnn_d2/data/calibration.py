"""Camera calibration files.

KITTI ``calib_cam_to_cam.txt`` (KITTI 2015 ``calib_cam_to_cam/%06d.txt``, KITTI raw
``<date>/calib_cam_to_cam.txt``): one "key: numbers" line per entry (calib_time, corner_dist,
S_0i, K_0i, D_0i, R_0i, T_0i, S_rect_0i, R_rect_0i, P_rect_0i for cameras i = 0..3). P_rect_02 and
P_rect_03 are the 3x4 projections of the rectified left and right colour cameras, row-major:

    P_rect_0i = [[fx, 0, cx, fx t_i], [0, fy, cy, ...], [0, 0, 1, ...]]

with t_i the x-offset of camera i in the rectified frame, so the stereo baseline of image_2 /
image_3 is b = (P_rect_02[0, 3] - P_rect_03[0, 3]) / fx (0.53-0.54 m on KITTI's files) and a
disparity d (px) between them is the depth Z = fx b / d (m).
"""
import os

import numpy as np

from .formats import DataFormatError

__all__ = ["read_kitti_calib"]

_KEYS = ("P_rect_02", "P_rect_03")


def read_kitti_calib(path):
    """Read a KITTI ``calib_cam_to_cam`` file -> (K (3, 3) float64 px, baseline b (m)).

    K = P_rect_02[:, :3] (left colour camera, rectified); b as in the module docstring. Keys other
    than P_rect_02 / P_rect_03 are skipped; errors name the file (and line).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"KITTI calibration file not found: '{path}' (calib_cam_to_cam, "
                                "from data_scene_flow_calib.zip).")
    values = {}
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if ":" not in line:
                if line.strip():
                    raise DataFormatError(
                        f"{path}:{number}: malformed line (expected 'key: values').")
                continue
            key, rest = (part.strip() for part in line.split(":", 1))
            if key not in _KEYS:
                continue
            try:
                numbers = [float(v) for v in rest.split()]
            except ValueError:
                raise DataFormatError(
                    f"{path}:{number}: '{key}' has a non-numeric value.") from None
            if len(numbers) != 12:
                raise DataFormatError(f"{path}:{number}: '{key}' needs 12 numbers (3x4 matrix), "
                                      f"got {len(numbers)}.")
            values[key] = np.array(numbers).reshape(3, 4)
    for key in _KEYS:
        if key not in values:
            raise DataFormatError(f"'{path}': no '{key}' line (a KITTI calib_cam_to_cam file).")
    p2, p3 = values["P_rect_02"], values["P_rect_03"]
    baseline = (p2[0, 3] - p3[0, 3]) / p2[0, 0]
    if not baseline > 0:
        raise DataFormatError(f"'{path}': stereo baseline (P_rect_02[0,3] - P_rect_03[0,3]) / fx "
                              f"= {baseline} m is not positive.")
    return p2[:, :3].copy(), float(baseline)
