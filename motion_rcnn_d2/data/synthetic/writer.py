"""Writing a rendered sequence in the Virtual KITTI 2 layout and file formats.

<root>/SceneNN/<variant>/ (files in frames/<kind>/Camera_0/)
  rgb/rgb_%05d.jpg                         JPEG quality 95 (OpenCV, deterministic)
  depth/depth_%05d.png                     uint16 centimetres (formats.write_depth_png)
  classSegmentation/classgt_%05d.png       RGB colours of colors.txt
  instanceSegmentation/instancegt_%05d.png uint8 (uint16 past 255), trackID + 1, 0 = none
  forwardFlow/flow_%05d.png                flow i -> i+1 (formats.write_vkitti_flow_png)
  intrinsic.txt extrinsic.txt pose.txt bbox.txt info.txt colors.txt (space separated)

Text files have Virtual KITTI 2's headers; only camera 0 is written. Choices where Virtual
KITTI 2 leaves room:
- pose.txt has a row for EVERY object at every frame (also when it is out of view), so that
  the motion of any object visible at t can be derived from the rows of t and t+1;
  bbox.txt has rows only for objects with at least one visible pixel.
- bbox: left/right/top/bottom = inclusive pixel extent of the visible pixels;
  occupancy_ratio = visible pixels / pixels the object covers ignoring occlusion (in the
  image); truncation_ratio = 1 - (area of the image-clipped rectangle of the projected box
  corners) / (its unclipped area), corners clamped to Z >= 0.1 m; isMoving = the object's
  pose changes from this frame to the next (for the last frame: from the previous one).
- pose: alpha = ry - atan2(X, Z) wrapped to [-pi, pi) (KITTI's observation angle);
  angles (ry, rx, rz) of R = Rz(rz) Rx(rx) Ry(ry) (motion.matrix_to_euler_angles).
- numbers are written with 10 significant digits.
"""
import os

import cv2
import numpy as np

from ..formats import write_depth_png, write_vkitti_flow_png
from .motion import matrix_to_euler_angles
from .render import box_corners
from .scene import CATEGORIES

__all__ = ["HEADERS", "SequenceWriter"]

HEADERS = {
    "intrinsic.txt": "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]",
    "extrinsic.txt": "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1",
    "pose.txt": "frame cameraID trackID alpha width height length world_space_X world_space_Y "
                "world_space_Z rotation_world_space_y rotation_world_space_x "
                "rotation_world_space_z camera_space_X camera_space_Y camera_space_Z "
                "rotation_camera_space_y rotation_camera_space_x rotation_camera_space_z",
    "bbox.txt": "frame cameraID trackID left right top bottom number_pixels truncation_ratio "
                "occupancy_ratio isMoving",
    "info.txt": "trackID label model color",
    "colors.txt": "Category r g b",
}
JPEG_QUALITY = 95
CAMERA_ID = 0
_FRAME_FILES = {
    "rgb": ("rgb", "rgb_{:05d}.jpg"),
    "depth": ("depth", "depth_{:05d}.png"),
    "class": ("classSegmentation", "classgt_{:05d}.png"),
    "instance": ("instanceSegmentation", "instancegt_{:05d}.png"),
    "flow": ("forwardFlow", "flow_{:05d}.png"),
}


def _num(value):
    """A number as text: 10 significant digits, no negative zero."""
    return format(float(value) + 0.0, ".10g")


def _row(*values):
    return " ".join(v if isinstance(v, str) else _num(v) for v in values)


def _wrap_angle(angle):
    """Angle wrapped to [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _imwrite(path, array, params=()):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not cv2.imwrite(path, array, list(params)):
        raise OSError(f"Could not write image file '{path}' (unwritable output directory?).")


def _truncation(scene, frame, obj):
    """1 - clipped / full area of the rectangle spanned by the projected box corners."""
    rotation = obj.rotations()[frame]
    extrinsic = scene.extrinsics[frame]
    corners = (box_corners(obj.size) @ rotation.T + obj.positions[frame]) @ extrinsic[:3, :3].T
    corners = corners + extrinsic[:3, 3]
    z = np.maximum(corners[:, 2], 0.1)
    k = scene.intrinsics
    u = k[0, 0] * corners[:, 0] / z + k[0, 2]
    v = k[1, 1] * corners[:, 1] / z + k[1, 2]
    full = (u.max() - u.min()) * (v.max() - v.min())
    if full <= 0:
        return 0.0
    clipped_u = np.clip([u.min(), u.max()], -0.5, scene.width - 0.5)
    clipped_v = np.clip([v.min(), v.max()], -0.5, scene.height - 0.5)
    clipped = (clipped_u[1] - clipped_u[0]) * (clipped_v[1] - clipped_v[0])
    return float(np.clip(1.0 - clipped / full, 0.0, 1.0))


class SequenceWriter:
    """Writes one sequence (`root` = <out>/SceneNN/<variant>): per-frame images with
    `write_frame`, per-pair flow with `write_flow`, then the text files with `close`."""

    def __init__(self, root, scene):
        self.root = os.fspath(root)
        self.scene = scene
        self.rows = {name: [] for name in HEADERS}
        self._class_colours = np.array([colour for _, colour in CATEGORIES], dtype=np.uint8)

    def frame_path(self, kind, frame):
        """Path of the frame file of `kind` (rgb, depth, class, instance, flow)."""
        folder, pattern = _FRAME_FILES[kind]
        return os.path.join(self.root, "frames", folder, "Camera_0", pattern.format(frame))

    def write_frame(self, frame, render, moving):
        """Write the images of `frame` and collect its text rows.

        Args:
            frame: index; render: render_frame(scene, frame).
            moving: (N,) bool isMoving flags of the objects for this frame.
        """
        rgb = np.ascontiguousarray(render["rgb"][..., ::-1])
        _imwrite(self.frame_path("rgb", frame), rgb, (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY))
        write_depth_png(self.frame_path("depth", frame), render["depth"])
        classes = np.ascontiguousarray(self._class_colours[render["class_id"]][..., ::-1])
        _imwrite(self.frame_path("class", frame), classes)
        instance = render["instance"]
        dtype = np.uint8 if instance.max(initial=0) <= 255 else np.uint16
        _imwrite(self.frame_path("instance", frame), instance.astype(dtype))
        self._camera_rows(frame)
        self._pose_rows(frame)
        self._bbox_rows(frame, render, moving)

    def write_flow(self, frame, flow, valid):
        """Write the forward flow frame -> frame + 1: flow (H, W, 2) px, valid (H, W) bool."""
        write_vkitti_flow_png(self.frame_path("flow", frame), flow, valid)

    def _camera_rows(self, frame):
        k = self.scene.intrinsics
        self.rows["intrinsic.txt"].append(
            _row(str(frame), str(CAMERA_ID), k[0, 0], k[1, 1], k[0, 2], k[1, 2]))
        self.rows["extrinsic.txt"].append(
            _row(str(frame), str(CAMERA_ID), *self.scene.extrinsics[frame].ravel()))

    def _pose_rows(self, frame):
        extrinsic = self.scene.extrinsics[frame]
        rotations, origins = self.scene.object_poses(frame)
        for index, obj in enumerate(self.scene.objects):
            world_angles = matrix_to_euler_angles(rotations[index])
            cam_rotation = extrinsic[:3, :3] @ rotations[index]
            cam_position = extrinsic[:3, :3] @ origins[index] + extrinsic[:3, 3]
            cam_angles = matrix_to_euler_angles(cam_rotation)
            alpha = _wrap_angle(cam_angles[1] - np.arctan2(cam_position[0], cam_position[2]))
            length, height, width = obj.size
            self.rows["pose.txt"].append(_row(
                str(frame), str(CAMERA_ID), str(obj.track_id), alpha, width, height, length,
                *origins[index], world_angles[1], world_angles[0], world_angles[2],
                *cam_position, cam_angles[1], cam_angles[0], cam_angles[2]))

    def _bbox_rows(self, frame, render, moving):
        instance = render["instance"]
        for index, obj in enumerate(self.scene.objects):
            rows, cols = np.nonzero(instance == obj.track_id + 1)
            if rows.size == 0:
                continue
            occupancy = rows.size / max(int(render["unoccluded"][index]), rows.size)
            self.rows["bbox.txt"].append(_row(
                str(frame), str(CAMERA_ID), str(obj.track_id), str(cols.min()), str(cols.max()),
                str(rows.min()), str(rows.max()), str(rows.size),
                _truncation(self.scene, frame, obj), occupancy, str(bool(moving[index]))))

    def close(self):
        """Write the text files (info.txt, colors.txt and the rows collected per frame)."""
        for obj in self.scene.objects:
            self.rows["info.txt"].append(
                _row(str(obj.track_id), obj.label, obj.model, obj.colour_name))
        self.rows["colors.txt"] = [_row(name, *map(str, colour)) for name, colour in CATEGORIES]
        for name, header in HEADERS.items():
            with open(os.path.join(self.root, name), "w", encoding="utf-8") as f:
                f.write("\n".join([header] + self.rows[name]) + "\n")
