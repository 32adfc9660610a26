"""Camera calibration: K for your own frames (from numbers, a calibration file, or assumed) and
KITTI's ``calib_cam_to_cam`` files.

Pixel convention (as everywhere in the package): pixel (u, v) has its centre at the integer
coordinates, so the image centre of a W x H frame is ((W - 1) / 2, (H - 1) / 2).

Calibration files (`read_calib`) are read by the first of ``CALIB_READERS`` that recognises the
file; a reader takes the file's path and text and returns the 3x3 K, or None when the file is
not in its format. Add a format by appending ``(description, reader)`` to ``CALIB_READERS``.

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

from ..geometry import check_intrinsics
from .formats import DataFormatError

__all__ = ["CALIB_READERS", "assumed_intrinsics", "check_principal_point", "intrinsics_matrix",
           "read_calib", "read_kitti_calib"]

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


# fx / W of Virtual KITTI's and KITTI's cameras (725 px at 1242 px, a horizontal field of
# view of about 81 degrees): the K assumed when none is given (assumed_intrinsics)
ASSUMED_FOCAL_PER_WIDTH = 725.0 / 1242.0


def intrinsics_matrix(fx, fy, cx, cy):
    """K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (float64, pixels)."""
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def assumed_intrinsics(width, height):
    """The K assumed for W x H frames without calibration: fx = fy = 0.5837 W (Virtual KITTI's
    field of view), principal point at the image centre. At 1242 x 375 it is Virtual KITTI's
    K (fx = fy = 725, cx = 620.5, cy = 187)."""
    focal = ASSUMED_FOCAL_PER_WIDTH * width
    return intrinsics_matrix(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0)


def _matrix_3x3(path, text):
    """Nine numbers (whitespace, comma or bracket separated; '#' comments) -> K."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    tokens = " ".join(lines).replace(",", " ").replace("[", " ").replace("]", " ").split()
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        return None
    return np.array(values, dtype=np.float64).reshape(3, 3) if len(values) == 9 else None


def _kitti_cam_to_cam(path, text):
    """A KITTI calib_cam_to_cam file (it has a P_rect_02 line) -> K of the left colour camera."""
    return read_kitti_calib(path)[0] if "P_rect_02:" in text else None


CALIB_READERS = [("a 3x3 text matrix (nine numbers, row by row)", _matrix_3x3),
                 ("KITTI's calib_cam_to_cam.txt (K of P_rect_02)", _kitti_cam_to_cam)]


def read_calib(path):
    """Read K from a calibration file (module docstring); errors name the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Calibration file not found: '{path}' (--calib).")
    with open(path, "r", errors="replace") as f:
        text = f.read()
    for _, reader in CALIB_READERS:
        K = reader(path, text)
        if K is not None:
            check_intrinsics(K, f"calibration file '{path}'")
            return K
    formats = "; ".join(description for description, _ in CALIB_READERS)
    raise ValueError(f"Calibration file '{path}' is in no format this reader knows: {formats}.")


def check_principal_point(K, width, height, source):
    """Raise ValueError when the principal point (cx, cy) of K does not fit W x H frames.

    It must lie in the middle half of the frame (|cx - (W - 1) / 2| <= W / 4, likewise for
    cy): real cameras have it within a few per cent of the centre, and intrinsics of another
    resolution (e.g. 1242 x 375 K on 640 x 480 frames) put it far off.
    """
    K = check_intrinsics(K, source).numpy()
    cx, cy = float(K[0, 2]), float(K[1, 2])
    if abs(cx - (width - 1) / 2.0) > width / 4.0 or abs(cy - (height - 1) / 2.0) > height / 4.0:
        raise ValueError(
            f"{source}: the frames are {width}x{height} but the intrinsics' principal point "
            f"(cx, cy) = ({cx:g}, {cy:g}) is far from their centre "
            f"({(width - 1) / 2.0:g}, {(height - 1) / 2.0:g}): they belong to another "
            "resolution. Give K of these frames (scale fx, cx by the width ratio and fy, cy by "
            "the height ratio of a resize)."
        )
    return K
