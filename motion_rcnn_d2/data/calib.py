"""Camera intrinsics K for your own frames: from numbers, a calibration file, or assumed.

Pixel convention (as everywhere in the package): pixel (u, v) has its centre at the integer
coordinates, so the image centre of a W x H frame is ((W - 1) / 2, (H - 1) / 2).

Calibration files are read by the first of ``CALIB_READERS`` that recognises the file; a
reader takes the file's path and text and returns the 3x3 K, or None when the file is not in
its format. Add a format by appending ``(description, reader)`` to ``CALIB_READERS``.
"""
import os

import numpy as np

from ..geometry import check_intrinsics

__all__ = ["CALIB_READERS", "assumed_intrinsics", "check_principal_point", "intrinsics_matrix",
           "read_calib"]

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


CALIB_READERS = [("a 3x3 text matrix (nine numbers, row by row)", _matrix_3x3)]


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
