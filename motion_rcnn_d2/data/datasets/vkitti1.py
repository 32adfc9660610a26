"""Virtual KITTI 1.3.1 as frame-pair dataset dicts (the thesis data set, docs/method.md section 7).

Layout under ``root``::

    vkitti_1.3.1_rgb/<seq>/<variant>/%05d.png
    vkitti_1.3.1_depthgt/<seq>/<variant>/%05d.png          (uint16 cm, 65535 = sky)
    vkitti_1.3.1_flowgt/<seq>/<variant>/%05d.png           (flow t -> t+1; optional folder)
    vkitti_1.3.1_scenegt/<seq>/<variant>/%05d.png          (RGB colour per class / object)
    vkitti_1.3.1_scenegt/<seq>_<variant>_scenegt_rgb_encoding.txt   ("Category(:id) r g b")
    vkitti_1.3.1_motgt/<seq>_<variant>.txt
        frame tid label truncated occluded alpha l t r b w3d h3d l3d x3d y3d z3d ry rx rz
        truncr occupr orig_label moving model color
    vkitti_1.3.1_extrinsicsgt/<seq>_<variant>.txt
        frame r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1   (world -> camera)

K is fixed: fx = fy = 725, cx = 620.5, cy = 187 (1242x375). An object of frame t (a motgt row)
is kept when its ``orig_label`` is in ``classes``, it has a row at t+1, its occupancy ratio
``occupr`` > ``min_occupancy`` (0.1 in the thesis) and its scene-colour mask "<orig_label>:<tid>"
is not empty. Its box is the mask's box. Pose (x3d, y3d, z3d) is the object's bottom centre in
camera coordinates, angles (rx, ry, rz) give R = Rz(rz) Rx(rx) Ry(ry); ``moving`` is the row's
moving flag at t; motions per ``common``.
"""
import os

import numpy as np

from ..formats import read_image
from .common import (
    camera_motion_from_extrinsics,
    list_files,
    mask_annotations,
    object_motion,
    read_table,
    require_file,
    rotations_from_angles,
)

__all__ = ["load_vkitti1", "VKITTI1_INTRINSICS"]

VKITTI1_INTRINSICS = [[725.0, 0.0, 620.5], [0.0, 725.0, 187.0], [0.0, 0.0, 1.0]]
_PREFIX = "vkitti_1.3.1_"
_EXTRINSICS = [("frame", int)] + [(f"m{i}", float) for i in range(16)]
_MOTGT = [("frame", int), ("tid", int), ("label", str), ("truncated", float), ("occluded", float),
          ("alpha", float), ("l", float), ("t", float), ("r", float), ("b", float), ("w3d", float),
          ("h3d", float), ("l3d", float), ("x3d", float), ("y3d", float), ("z3d", float),
          ("ry", float), ("rx", float), ("rz", float), ("truncr", float), ("occupr", float),
          ("orig_label", str), ("moving", bool), ("model", str), ("color", str)]
_ENCODING = [("category", str), ("r", int), ("g", int), ("b", int)]


def _sequences(root, variant, dataset_name):
    rgb_root = os.path.join(root, _PREFIX + "rgb")
    if not os.path.isdir(rgb_root):
        raise FileNotFoundError(
            f"Data set '{dataset_name}': missing folder '{rgb_root}' (expected the Virtual KITTI "
            f"1.3.1 archives extracted under '{root}'). Set MOTION_RCNN_DATASETS or the root."
        )
    seqs = sorted(s for s in os.listdir(rgb_root)
                  if os.path.isdir(os.path.join(rgb_root, s, variant)))
    if not seqs:
        raise FileNotFoundError(
            f"Data set '{dataset_name}': no sequence with a '{variant}' folder under '{rgb_root}'."
        )
    return seqs


def load_vkitti1(root, variant="clone", classes=("Car", "Van"), min_occupancy=0.1,
                 dataset_name="vkitti1"):
    """All frame pairs of all sequences under ``root`` (sequence order, then frame order)."""
    dicts = []
    for seq in _sequences(root, variant, dataset_name):
        dicts.extend(_load_sequence(root, seq, variant, classes, min_occupancy, dataset_name))
    return dicts


def _colour_keys(encoding):
    """'Car:12' -> r << 16 | g << 8 | b."""
    return {cat: (r << 16) | (g << 8) | b
            for cat, r, g, b in zip(encoding["category"], encoding["r"], encoding["g"],
                                    encoding["b"])}


def _load_sequence(root, seq, variant, classes, min_occupancy, dataset_name):
    name = f"{seq}_{variant}"
    ext = read_table(os.path.join(root, _PREFIX + "extrinsicsgt", name + ".txt"), _EXTRINSICS,
                     dataset_name)
    mot_path = os.path.join(root, _PREFIX + "motgt", name + ".txt")
    mot = read_table(mot_path, _MOTGT, dataset_name)
    encoding_path = os.path.join(root, _PREFIX + "scenegt", name + "_scenegt_rgb_encoding.txt")
    colours = _colour_keys(read_table(encoding_path, _ENCODING, dataset_name))

    dirs = {kind: os.path.join(root, _PREFIX + kind, seq, variant)
            for kind in ("rgb", "depthgt", "flowgt", "scenegt")}
    listing = {kind: list_files(d, dataset_name, required=kind != "flowgt")
               for kind, d in dirs.items()}

    def path(kind, frame):
        file_name = f"{frame:05d}.png"
        full = os.path.join(dirs[kind], file_name)
        if file_name not in listing[kind]:
            require_file(full, dataset_name)
        return full

    matrices = np.array([ext[f"m{i}"] for i in range(16)], np.float64).T.reshape(-1, 4, 4)
    extrinsics = dict(zip(ext["frame"], matrices))
    rotations = rotations_from_angles(mot["rx"], mot["ry"], mot["rz"])
    positions = np.array([mot["x3d"], mot["y3d"], mot["z3d"]], dtype=np.float64).T.reshape(-1, 3)
    rows = {}
    for i, (frame, tid) in enumerate(zip(mot["frame"], mot["tid"])):
        rows.setdefault(frame, {})[tid] = i
    class_ids = {c: i for i, c in enumerate(classes)}

    dicts, size = [], None
    for frame in sorted(extrinsics):
        if frame + 1 not in extrinsics:
            continue
        cam_rot, cam_trans, cam_moving = camera_motion_from_extrinsics(
            extrinsics[frame], extrinsics[frame + 1])
        record = {
            "file_name": path("rgb", frame),
            "file_name_next": path("rgb", frame + 1),
            "depth_file_name": path("depthgt", frame),
            "depth_file_name_next": path("depthgt", frame + 1),
            "image_id": f"{seq}/{variant}/{frame:05d}",
            "intrinsics": [list(row) for row in VKITTI1_INTRINSICS],
            "camera_motion": {"rotation": cam_rot.tolist(), "translation": cam_trans.tolist(),
                              "moving": cam_moving},
        }
        if listing["flowgt"] is not None:
            record["flow_file_name"] = path("flowgt", frame)
            record["flow_format"] = "vkitti"
        now, nxt = rows.get(frame, {}), rows.get(frame + 1, {})
        candidates = [
            (tid, i) for tid, i in sorted(now.items())
            if mot["orig_label"][i] in class_ids and tid in nxt and mot["occupr"][i] > min_occupancy
        ]
        annotations = []
        if candidates or size is None:
            scene_path = path("scenegt", frame)
            bgr = read_image(scene_path).astype(np.int32)
            size = bgr.shape[:2]
        record["height"], record["width"] = size
        if candidates:
            packed = (bgr[..., 2] << 16) | (bgr[..., 1] << 8) | bgr[..., 0]
            kept, masks = [], []
            for tid, i in candidates:
                key = f"{mot['orig_label'][i]}:{tid}"
                if key not in colours:
                    raise ValueError(
                        f"Data set '{dataset_name}': object '{key}' of '{mot_path}' line "
                        f"{mot['_line'][i]} has no colour in '{encoding_path}'."
                    )
                mask = packed == colours[key]
                if mask.any():
                    kept.append((tid, i))
                    masks.append(mask)
            annotations = mask_annotations(np.stack(masks)) if masks else []
            for annotation, (tid, i) in zip(annotations, kept):
                j = nxt[tid]
                annotation.update(
                    category_id=class_ids[mot["orig_label"][i]], track_id=tid,
                    motion=object_motion(rotations[i], positions[i], rotations[j], positions[j],
                                         cam_rot, cam_trans, mot["moving"][i]))
        record["annotations"] = annotations
        dicts.append(record)
    return dicts
