"""Shared pieces of the motion data set loaders: text tables, ground-truth motion from poses,
mask annotations, the train/val split.

Ground truth follows docs/method.md section 5. With world-to-camera extrinsics E_t = [R_e,t | t_e,t]:

    camera motion   R_cam = R_e,t+1 R_e,t^T,    t_cam = t_e,t+1 - R_cam t_e,t

so that a static point P (camera t) is at R_cam P + t_cam in camera t+1. With an object's
pose given in camera space per frame (position c_t, metres; rotation R^cam_t from the angles):

    R_k = R_cam^T R^cam_t+1 R^cam_t^T,    p_k = c_t,    t_k = R_cam^T (c_t+1 - t_cam) - c_t

in the model P' = R_k (P - p_k) + p_k + t_k, then P'' = R_cam P' + t_cam. A still object
(the data set's moving flag is off) gets R_k = I, t_k = 0 and keeps its pivot.

Rotation from the data sets' camera-space angles (rx, ry, rz), radians:
R^cam = Rz(rz) Rx(rx) Ry(ry) (``geometry.euler_angles_to_matrix``). The original Motion R-CNN
code swapped rx and rz inside its ``euler_to_rot``; the Virtual KITTI 1.3.1 sample rows
support the column names as documented (every car's rz equals the camera roll read from
the extrinsics), so they are used as named. The synthetic world checks the convention
exactly (tests/test_datasets_vkitti2.py).
"""
import os
import random

import numpy as np
import torch
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from ...geometry import euler_angles_to_matrix
from ..formats import DataFormatError

__all__ = [
    "read_table",
    "parse_bool",
    "require_file",
    "list_files",
    "camera_motion_from_extrinsics",
    "rotations_from_angles",
    "object_motion",
    "mask_annotations",
    "id_map_annotations",
    "split_pairs",
]

_TRUE = {"1", "true", "True", "TRUE"}
_FALSE = {"0", "false", "False", "FALSE"}


def parse_bool(text):
    """'1'/'0'/'True'/'False' (any case of true/false) -> bool; ValueError otherwise."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"'{text}' is not a boolean (expected 0/1/True/False)")


_PARSERS = {int: int, float: float, str: str, bool: parse_bool}


def read_table(path, columns, dataset_name, header=True):
    """Read a whitespace-separated text table with one header line.

    Args:
        path: the text file.
        columns: list of (name, type) with type in {int, float, str, bool}; every data row
            must have exactly this many fields (the header too, when ``header``).
        dataset_name: named in errors.
    Returns:
        dict name -> list of parsed values (one per data row), plus "_line" -> line numbers.
    Raises:
        FileNotFoundError naming the file and data set; DataFormatError naming the file and
        line for a row with a wrong number of fields or an unparsable value.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Data set '{dataset_name}': missing file '{path}'. Check the data set root and layout."
        )
    names = [name for name, _ in columns]
    parsers = [_PARSERS[kind] for _, kind in columns]
    table = {name: [] for name in names}
    table["_line"] = []
    with open(path) as f:
        lines = f.read().splitlines()
    start = 0
    if header:
        if not lines or len(lines[0].split()) != len(columns):
            got = len(lines[0].split()) if lines else 0
            raise DataFormatError(
                f"{path}:1: expected a header of {len(columns)} columns ({' '.join(names)}), "
                f"got {got} (data set '{dataset_name}')."
            )
        start = 1
    for number, line in enumerate(lines[start:], start=start + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(columns):
            raise DataFormatError(
                f"{path}:{number}: malformed row, expected {len(columns)} fields "
                f"({' '.join(names)}), got {len(fields)} (data set '{dataset_name}')."
            )
        for name, parse, field in zip(names, parsers, fields):
            try:
                table[name].append(parse(field))
            except ValueError as error:
                raise DataFormatError(
                    f"{path}:{number}: column '{name}': cannot parse '{field}' ({error}) "
                    f"(data set '{dataset_name}')."
                ) from None
        table["_line"].append(number)
    return table


def require_file(path, dataset_name):
    """Raise FileNotFoundError naming ``path`` and the data set unless it is a file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"Data set '{dataset_name}': missing file '{path}'. Check the data set root and layout."
        )
    return path


def list_files(directory, dataset_name, required=True):
    """Names of the files in ``directory`` as a set (one listdir instead of one stat per file).

    A missing directory raises FileNotFoundError naming it and the data set, or returns
    None when not ``required``.
    """
    if not os.path.isdir(directory):
        if not required:
            return None
        raise FileNotFoundError(
            f"Data set '{dataset_name}': missing directory '{directory}'. Check the data set root "
            "and layout."
        )
    return set(os.listdir(directory))


def camera_motion_from_extrinsics(extrinsics_t, extrinsics_next):
    """Camera motion between two world-to-camera extrinsics (4x4 arrays, metres).

    R_cam = R_e,t+1 R_e,t^T, t_cam = t_e,t+1 - R_cam t_e,t. Returns (R (3,3), t (3,), moving),
    moving = the two extrinsics differ (np.allclose with its default tolerances).
    """
    rot_t, trans_t = extrinsics_t[:3, :3], extrinsics_t[:3, 3]
    rot_n, trans_n = extrinsics_next[:3, :3], extrinsics_next[:3, 3]
    rotation = rot_n @ rot_t.T
    translation = trans_n - rotation @ trans_t
    return rotation, translation, not np.allclose(extrinsics_t, extrinsics_next)


def rotations_from_angles(rx, ry, rz):
    """Camera-space rotations from angle arrays (N,) radians -> (N,3,3) float64 numpy,
    R = Rz(rz) Rx(rx) Ry(ry) (one batched call of geometry.euler_angles_to_matrix)."""
    angles = torch.as_tensor(np.stack([rx, ry, rz], axis=-1), dtype=torch.float64).reshape(-1, 3)
    return euler_angles_to_matrix(angles).numpy()


def object_motion(rot_t, pos_t, rot_next, pos_next, camera_rotation, camera_translation, moving):
    """Object motion in camera-t coordinates from camera-space poses at t and t+1.

    Args: rotations (3,3) object-to-camera at t and t+1, positions (3,) metres, the camera
    motion (3,3), (3,), and the moving flag. Returns {"rotation", "translation", "pivot",
    "moving"} as lists: R_k = R_cam^T R_t+1 R_t^T, p_k = c_t, t_k = R_cam^T (c_t+1 - t_cam) - c_t;
    identity and zero translation when not moving.
    """
    if moving:
        rotation = camera_rotation.T @ rot_next @ rot_t.T
        translation = camera_rotation.T @ (pos_next - camera_translation) - pos_t
    else:
        rotation, translation = np.eye(3), np.zeros(3)
    return {
        "rotation": rotation.tolist(),
        "translation": translation.tolist(),
        "pivot": np.asarray(pos_t, dtype=np.float64).tolist(),
        "moving": bool(moving),
    }


def mask_annotations(masks):
    """Detectron2 annotation parts of binary masks (N,H,W) bool/uint8.

    Returns a list of N dicts {bbox (XYXY_ABS: [x0, y0, x1 + 1, y1 + 1] of the mask's pixels),
    bbox_mode, segmentation (pycocotools RLE, counts as str), iscrowd 0}. Masks must be
    non-empty.
    """
    masks = np.asarray(masks)
    if len(masks) == 0:
        return []
    stacked = np.empty(masks.shape[1:] + (len(masks),), dtype=np.uint8, order="F")
    for k, mask in enumerate(masks):
        stacked[:, :, k] = mask
    return _rle_annotations(stacked)


def id_map_annotations(ids, values):
    """Like mask_annotations for the masks ``ids == v`` of an id map (H,W) and ids ``values``."""
    stacked = np.empty(ids.shape + (len(values),), dtype=np.uint8, order="F")
    ids = np.asfortranarray(ids)  # so that each comparison reads and writes contiguously
    for k, value in enumerate(values):
        np.equal(ids, value, out=stacked[:, :, k], casting="unsafe")
    return _rle_annotations(stacked) if len(values) else []


def _rle_annotations(stacked):
    """(H, W, N) Fortran-ordered uint8 masks -> annotation dicts (boxes from the RLEs)."""
    rles = mask_util.encode(stacked)
    boxes = mask_util.toBbox(rles)  # (N, 4) XYWH of the tight box, w = x_max - x_min + 1
    out = []
    for rle, (x, y, w, h) in zip(rles, boxes.tolist()):
        rle["counts"] = rle["counts"].decode("ascii")
        out.append({"bbox": [x, y, x + w, y + h], "bbox_mode": BoxMode.XYXY_ABS,
                    "segmentation": rle, "iscrowd": 0})
    return out


def split_pairs(dicts, split, num_val, seed=0):
    """The thesis split: all pairs shuffled with random.Random(seed), the first ``num_val``
    for validation, the rest for training.

    Args:
        dicts: dataset dicts in a deterministic order (sequence, then frame).
        split: "train", "val" or None (all pairs, unshuffled).
        num_val: an int (pairs) or a float in (0, 1) (share of the pairs, rounded, at least 1).
    """
    if split is None:
        return list(dicts)
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got '{split}'.")
    if isinstance(num_val, float) and 0 < num_val < 1:
        num_val = max(1, int(round(num_val * len(dicts))))
    num_val = int(num_val)
    if not 0 <= num_val < len(dicts):
        raise ValueError(
            f"Cannot split {len(dicts)} pairs with {num_val} for validation: fewer pairs than "
            "that (or none left for training). Use more data or a smaller num_val."
        )
    order = list(dicts)
    random.Random(seed).shuffle(order)
    return order[:num_val] if split == "val" else order[num_val:]
