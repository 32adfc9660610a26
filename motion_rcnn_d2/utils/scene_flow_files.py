"""Writing a model's 3D result: per-pixel points at t and their scene flow as ``.npy`` arrays and
a coloured point cloud (``.ply``).

Model outputs (Motion R-CNN and SfM-Net, docs/method.md section 10) carry "points" P = d K^-1 x
and "scene_flow" P'' - P, each (3, H, W) in metres, camera-t coordinates (x right, y down,
z forward), NaN where the depth of frame t is invalid. Where the flow is valid, projecting
P + scene flow with K gives pixel + flow (the same composition made both).

Files written for one pair (``prefix`` = output folder / pair name), each atomically:
- ``<prefix>_points.npy``, ``<prefix>_scene_flow.npy``: float32 (H, W, 3), NaN where invalid;
- ``<prefix>_points.ply``: binary little-endian PLY 1.0 of the valid pixels' points at t with
  the colour of frame t (``x y z`` float32, ``red green blue`` uint8: what MeshLab,
  CloudCompare, Open3D and Blender read) and the scene flow as extra float32 properties
  ``flow_x flow_y flow_z`` (CloudCompare shows them as scalar fields; other viewers skip them).
"""
import os

import numpy as np

from .files import open_atomically, write_atomically

__all__ = ["PLY_PROPERTIES", "scene_flow_arrays", "write_ply", "write_scene_flow"]

PLY_PROPERTIES = (("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                  ("blue", "u1"), ("flow_x", "<f4"), ("flow_y", "<f4"), ("flow_z", "<f4"))
_PLY_TYPES = {"<f4": "float", "u1": "uchar"}


def scene_flow_arrays(output):
    """(points, scene_flow) of a model output as float32 (H, W, 3) numpy arrays (NaN where
    invalid), or None when the output has no 3D result (FlowNetS)."""
    if "points" not in output or "scene_flow" not in output:
        return None
    return tuple(np.ascontiguousarray(output[key].detach().cpu().float().permute(1, 2, 0).numpy())
                 for key in ("points", "scene_flow"))


def write_ply(path, points, colors_rgb, flow):
    """Write a binary PLY of N points: points (N, 3) m, colors_rgb (N, 3) uint8, flow (N, 3) m
    (properties `PLY_PROPERTIES`)."""
    vertices = np.empty(len(points), dtype=list(PLY_PROPERTIES))
    for i, axis in enumerate("xyz"):
        vertices[axis] = points[:, i]
        vertices["flow_" + axis] = flow[:, i]
    for i, channel in enumerate(("red", "green", "blue")):
        vertices[channel] = colors_rgb[:, i]
    header = ["ply", "format binary_little_endian 1.0",
              "comment motion_rcnn_d2: points at t (m, camera t: x right, y down, z forward), "
              "colour of frame t, scene flow (m)", f"element vertex {len(vertices)}"]
    header += [f"property {_PLY_TYPES[kind]} {name}" for name, kind in PLY_PROPERTIES]
    header.append("end_header\n")
    with open_atomically(path, "wb") as f:
        f.write("\n".join(header).encode("ascii"))
        f.write(vertices.tobytes())


def write_scene_flow(prefix, output, image_bgr):
    """Write ``<prefix>_points.npy``, ``<prefix>_scene_flow.npy`` and ``<prefix>_points.ply``.

    Args:
        prefix: path without suffix (its folder must exist). output: a model output dict.
        image_bgr: (H, W, 3) uint8 frame t (the point colours).
    Returns:
        the written paths ([] when the output has no 3D result).
    """
    arrays = scene_flow_arrays(output)
    if arrays is None:
        return []
    points, flow = arrays
    if image_bgr.shape[:2] != points.shape[:2]:
        raise ValueError(f"write_scene_flow('{prefix}'): frame {image_bgr.shape[:2]} and points "
                         f"{points.shape[:2]} differ in size.")
    paths = [f"{prefix}_points.npy", f"{prefix}_scene_flow.npy", f"{prefix}_points.ply"]
    for path, array in zip(paths, arrays):
        write_atomically(path, lambda tmp, a=array: np.save(tmp, a))
    valid = np.isfinite(points).all(axis=2) & np.isfinite(flow).all(axis=2)
    write_ply(paths[2], points[valid], image_bgr[valid][:, ::-1], flow[valid])
    return paths
