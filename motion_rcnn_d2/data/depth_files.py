"""Depth maps from the files users have: 16-bit PNG, NumPy ``.npy`` and ``.pfm``.

Every reader returns HxW float32 depth d in metres with every invalid value (0, negative,
NaN, +-inf, and a PNG's 65535) set to 0, the value the models read as "no depth"; invalid
values are never passed on as numbers. Encodings:

- 16-bit PNG (one channel): d = value / scale, ``scale`` in PNG units per metre
  (100: centimetres, Virtual KITTI and the synthetic world; 1000: millimetres);
  0 and 65535 are invalid (``formats.read_depth_png``).
- ``.npy``: an HxW (or HxWx1) array of depth in metres, any real dtype; read without
  pickles (``allow_pickle=False``).
- ``.pfm``: one-channel ("Pf") portable float map in metres, either byte order, rows stored
  bottom to top (decoded by OpenCV).
"""
import os

import cv2
import numpy as np

from .formats import DataFormatError, read_depth_png

__all__ = ["DEPTH_EXTENSIONS", "read_depth", "read_depth_npy", "read_depth_pfm", "valid_depth"]


def valid_depth(depth, path):
    """``depth`` as float32 with its invalid values (<= 0 or non-finite) set to 0.

    Raises DataFormatError naming ``path`` when no value is valid (an all-invalid map is a
    wrong file or a wrong unit, never a usable depth).
    """
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        raise DataFormatError(
            f"Depth file '{path}' has no valid value (every value is 0, negative, NaN or "
            "infinite): check the file and its format (metres; PNG with --depth-scale)."
        )
    return np.where(valid, depth, np.float32(0.0))


def _check_file(path):
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"File not found: '{path}'.")
    return path


def _one_channel(path, depth, what):
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2 or depth.size == 0:
        raise DataFormatError(f"'{path}' is not a depth map: {what} of shape {depth.shape}, "
                              "expected HxW.")
    return depth


def read_depth_npy(path):
    """An HxW ``.npy`` array of metres -> HxW float32 metres, 0 where invalid."""
    path = _check_file(path)
    try:
        depth = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataFormatError(f"Could not read '{path}' as a NumPy .npy array ({error}).") from error
    if not isinstance(depth, np.ndarray) or depth.dtype.kind not in "fiu":
        raise DataFormatError(f"'{path}' is not a numeric depth array (dtype "
                              f"{getattr(depth, 'dtype', type(depth))}).")
    return valid_depth(_one_channel(path, depth, ".npy array"), path)


def read_depth_pfm(path):
    """A one-channel ``.pfm`` of metres -> HxW float32 metres, 0 where invalid."""
    path = _check_file(path)
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith((b"Pf", b"PF")):
        raise DataFormatError(f"'{path}' is not a PFM file (it must start with 'Pf').")
    depth = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if depth is None:
        raise DataFormatError(f"Could not decode PFM file '{path}' (truncated or corrupt).")
    return valid_depth(_one_channel(path, depth, "3-channel PFM ('PF')"), path)


def _read_png(path, scale):
    return valid_depth(read_depth_png(path, scale), path)


_READERS = {".png": _read_png, ".npy": lambda path, scale: read_depth_npy(path),
            ".pfm": lambda path, scale: read_depth_pfm(path)}
DEPTH_EXTENSIONS = tuple(_READERS)


def read_depth(path, scale=100.0):
    """Read a depth file by its extension (module docstring) -> HxW float32 metres.

    Args:
        path: a ``.png``, ``.npy`` or ``.pfm`` file.
        scale: PNG units per metre (ignored for ``.npy`` and ``.pfm``, which hold metres).
    """
    if not scale > 0:
        raise ValueError(f"depth scale must be > 0 (PNG units per metre), got {scale}")
    extension = os.path.splitext(os.fspath(path))[1].lower()
    if extension not in _READERS:
        raise DataFormatError(f"'{path}' is not a depth file this reader knows: use "
                              f"{', '.join(DEPTH_EXTENSIONS)}.")
    return _READERS[extension](path, scale)
