"""Virtual KITTI 2 (and the synthetic world, written in its layout) as frame-pair dataset dicts.

Layout under ``root`` (the archives of Virtual KITTI 2 extracted into one folder)::

    SceneNN/<variant>/frames/rgb/Camera_0/rgb_%05d.jpg
                      frames/depth/Camera_0/depth_%05d.png              (uint16 cm)
                      frames/instanceSegmentation/Camera_0/instancegt_%05d.png  (trackID + 1)
                      frames/forwardFlow/Camera_0/flow_%05d.png         (optional folder)
                      intrinsic.txt extrinsic.txt pose.txt bbox.txt info.txt

Each sequence's text files are read once. Pairs are consecutive frames (t, t+1) listed in
extrinsic.txt. An object of frame t is kept when its class (info.txt label) is one of
``classes``, it has a pose at t and t+1, and its instance mask at t has at least
``min_visible_pixels`` pixels. Its box is the box of that mask; its motion comes from the
camera-space pose columns (see ``common``); it is moving per bbox.txt's isMoving flag at t (an
object without a bbox row is moving when its motion differs from the identity by more than
1e-4 in a rotation entry or in metres). Only Camera_0 is used.
"""
import os

import numpy as np

from ..formats import read_instance_png
from .common import (
    camera_motion_from_extrinsics,
    list_files,
    id_map_annotations,
    object_motion,
    read_table,
    require_file,
    rotations_from_angles,
)

__all__ = ["load_vkitti2", "load_vkitti2_sequence", "vkitti2_sequences"]

_CAMERA = 0
_STILL_TOLERANCE = 1e-4  # rotation entries (~rad) and translation (m) of a "still" object
_INTRINSIC = [("frame", int), ("cameraID", int), ("fx", float), ("fy", float), ("cx", float),
              ("cy", float)]
_EXTRINSIC = [("frame", int), ("cameraID", int)] + [(f"m{i}", float) for i in range(16)]
_POSE = [("frame", int), ("cameraID", int), ("trackID", int), ("alpha", float), ("width", float),
         ("height", float), ("length", float), ("world_x", float), ("world_y", float),
         ("world_z", float), ("world_ry", float), ("world_rx", float), ("world_rz", float),
         ("x", float), ("y", float), ("z", float), ("ry", float), ("rx", float), ("rz", float)]
_BBOX = [("frame", int), ("cameraID", int), ("trackID", int), ("left", float), ("right", float),
         ("top", float), ("bottom", float), ("number_pixels", int), ("truncation_ratio", float),
         ("occupancy_ratio", float), ("isMoving", bool)]
_INFO = [("trackID", int), ("label", str), ("model", str), ("color", str)]


def vkitti2_sequences(root, variant, dataset_name):
    """Sorted scene names under ``root`` that have a ``<variant>`` folder."""
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"Data set '{dataset_name}': root folder '{root}' does not exist. Set the environment "
            "variable MOTION_RCNN_DATASETS or register the data set with its real root."
        )
    scenes = sorted(s for s in os.listdir(root) if os.path.isdir(os.path.join(root, s, variant)))
    if not scenes:
        raise FileNotFoundError(
            f"Data set '{dataset_name}': no scene with a '{variant}' folder under '{root}' "
            f"(expected '{root}/SceneNN/{variant}/frames/rgb/Camera_0/rgb_00000.jpg' ...)."
        )
    return scenes


def load_vkitti2(root, variant="clone", classes=("Car", "Van"), min_visible_pixels=50,
                 dataset_name="vkitti2"):
    """All frame pairs of all scenes under ``root`` (scene order, then frame order)."""
    dicts = []
    for scene in vkitti2_sequences(root, variant, dataset_name):
        dicts.extend(load_vkitti2_sequence(os.path.join(root, scene, variant), classes,
                                           min_visible_pixels, dataset_name))
    return dicts


def _camera_rows(table):
    keep = [i for i, cam in enumerate(table["cameraID"]) if cam == _CAMERA]
    return {name: [values[i] for i in keep] for name, values in table.items()}


def _by_frame(table):
    """frame -> {trackID: row index}."""
    out = {}
    for i, (frame, track) in enumerate(zip(table["frame"], table["trackID"])):
        out.setdefault(frame, {})[track] = i
    return out


def _read_sequence_tables(seq_dir, dataset_name):
    def read(name, columns):
        return _camera_rows(read_table(os.path.join(seq_dir, name), columns, dataset_name))

    intrinsic = read("intrinsic.txt", _INTRINSIC)
    extrinsic = read("extrinsic.txt", _EXTRINSIC)
    pose = read("pose.txt", _POSE)
    bbox = read("bbox.txt", _BBOX)
    info = read_table(os.path.join(seq_dir, "info.txt"), _INFO, dataset_name)
    return intrinsic, extrinsic, pose, bbox, info


class _Files:
    """Frame file paths of one sequence, checked against one listing per folder."""

    _FOLDERS = {"rgb": ("rgb", "rgb_{:05d}.jpg"), "depth": ("depth", "depth_{:05d}.png"),
                "instance": ("instanceSegmentation", "instancegt_{:05d}.png"),
                "flow": ("forwardFlow", "flow_{:05d}.png")}

    def __init__(self, seq_dir, dataset_name):
        self.dataset_name = dataset_name
        self.dirs, self.listing = {}, {}
        for key, (folder, _) in self._FOLDERS.items():
            self.dirs[key] = os.path.join(seq_dir, "frames", folder, "Camera_0")
            self.listing[key] = list_files(self.dirs[key], dataset_name, required=key != "flow")

    def has(self, key):
        return self.listing[key] is not None

    def path(self, key, frame):
        name = self._FOLDERS[key][1].format(frame)
        path = os.path.join(self.dirs[key], name)
        if name not in self.listing[key]:
            require_file(path, self.dataset_name)  # raises, naming the path and data set
        return path


def load_vkitti2_sequence(seq_dir, classes=("Car", "Van"), min_visible_pixels=50,
                          dataset_name="vkitti2"):
    """Dataset dicts of the consecutive frame pairs of one sequence folder ``SceneNN/<variant>``."""
    intrinsic, extrinsic, pose, bbox, info = _read_sequence_tables(seq_dir, dataset_name)
    files = _Files(seq_dir, dataset_name)
    scene, variant = os.path.basename(os.path.dirname(seq_dir)), os.path.basename(seq_dir)
    labels = dict(zip(info["trackID"], info["label"]))
    class_ids = {name: i for i, name in enumerate(classes)}

    intrinsics = {
        f: [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
        for f, fx, fy, cx, cy in zip(intrinsic["frame"], intrinsic["fx"], intrinsic["fy"],
                                     intrinsic["cx"], intrinsic["cy"])
    }
    matrices = np.array([extrinsic[f"m{i}"] for i in range(16)], np.float64).T.reshape(-1, 4, 4)
    extrinsics = dict(zip(extrinsic["frame"], matrices))
    rotations = rotations_from_angles(pose["rx"], pose["ry"], pose["rz"])
    positions = np.array([pose["x"], pose["y"], pose["z"]], dtype=np.float64).T.reshape(-1, 3)
    poses, boxes = _by_frame(pose), _by_frame(bbox)

    dicts = []
    frames = sorted(extrinsics)
    for frame in frames:
        if frame + 1 not in extrinsics:
            continue
        if frame not in intrinsics:
            raise ValueError(
                f"Data set '{dataset_name}': frame {frame} has no Camera_0 row in "
                f"'{os.path.join(seq_dir, 'intrinsic.txt')}'."
            )
        cam_rot, cam_trans, cam_moving = camera_motion_from_extrinsics(
            extrinsics[frame], extrinsics[frame + 1])
        record = {
            "file_name": files.path("rgb", frame),
            "file_name_next": files.path("rgb", frame + 1),
            "depth_file_name": files.path("depth", frame),
            "depth_file_name_next": files.path("depth", frame + 1),
            "image_id": f"{scene}/{variant}/{frame:05d}",
            "intrinsics": intrinsics[frame],
            "camera_motion": {"rotation": cam_rot.tolist(), "translation": cam_trans.tolist(),
                              "moving": cam_moving},
        }
        if files.has("flow"):
            record["flow_file_name"] = files.path("flow", frame)
            record["flow_format"] = "vkitti"
        instance_path = files.path("instance", frame)
        ids = read_instance_png(instance_path)
        record["height"], record["width"] = ids.shape
        now, nxt, now_boxes = poses.get(frame, {}), poses.get(frame + 1, {}), boxes.get(frame, {})
        counts = np.bincount(ids.ravel())
        kept, motions = [], []
        for value in np.flatnonzero(counts[1:] >= max(min_visible_pixels, 1)) + 1:
            track = int(value) - 1
            if labels.get(track) not in class_ids or track not in now or track not in nxt:
                continue
            i, j = now[track], nxt[track]
            pose_args = (rotations[i], positions[i], rotations[j], positions[j], cam_rot, cam_trans)
            if track in now_boxes:
                motion = object_motion(*pose_args, bbox["isMoving"][now_boxes[track]])
            else:  # no bbox row: moving when the motion is not the identity (up to the
                # text files' precision: 1e-4 rad, 0.1 mm)
                motion = object_motion(*pose_args, True)
                if (np.allclose(motion["rotation"], np.eye(3), rtol=0, atol=_STILL_TOLERANCE)
                        and np.allclose(motion["translation"], 0, rtol=0, atol=_STILL_TOLERANCE)):
                    motion = object_motion(*pose_args, False)
            kept.append((track, class_ids[labels[track]], value))
            motions.append(motion)
        annotations = id_map_annotations(ids, [v for _, _, v in kept])
        for annotation, (track, class_id, _), motion in zip(annotations, kept, motions):
            annotation.update(category_id=class_id, track_id=track, motion=motion)
        record["annotations"] = annotations
        dicts.append(record)
    return dicts
