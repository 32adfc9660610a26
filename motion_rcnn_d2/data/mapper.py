"""MotionDatasetMapper: a frame-pair dataset dict -> the model-input dict, with ONE sampled
geometric transform applied to everything and the geometry kept consistent.

Geometric transforms (Detectron2 augmentations: ResizeShortestEdge, RandomCrop, horizontal
RandomFlip) are sampled once on frame t and applied to

- both frames: ``Transform.apply_image`` (bilinear resize, as Detectron2 does for images);
- depth(s), flow, flow validity and instance masks: nearest neighbour with pixel centres at
  integers (output pixel j reads input pixel floor((j + 0.5) * in / out)), so depth is never
  blended across edges or with invalid (0) pixels, and every dense value of an output pixel
  comes from the same input pixel;
- intrinsics: resize by (sx, sy) -> geometry.scale_intrinsics, crop at (x0, y0) ->
  geometry.crop_intrinsics, horizontal flip of width W -> geometry.flip_intrinsics
  (cx' = W - 1 - cx);
- flow values: resize -> (u sx, v sy); horizontal flip -> u negated;
- motions on a horizontal flip (the scene mirrored by S = diag(-1, 1, 1)): R -> S R S,
  t -> S t, p -> S p, for every object and for the camera.

`PairGeometry` (pair_geometry.py) does all of that for one sampled transform.

Photometric augmentation (INPUT.BRIGHTNESS / CONTRAST / SATURATION factor ranges) draws its
factors once and applies the same per-pixel map to both frames: x -> b x, then
x -> c (x - m) + m with m the mean grey level of frame t (the same m for frame t+1), then
x -> g + s (x - g) with g the pixel's luminance.

Ground truth (``instances``, ``camera_motion``) is produced whenever the dict has annotations,
in training and at test time (the model ignores it at inference; MotionEvaluator reads it).
Instances whose mask becomes empty (cropped away) are dropped; boxes are the masks' boxes.

Checked before use, with errors naming the pair and the key: ``intrinsics``
(:func:`check_intrinsics`) and every motion's rotation, translation and pivot
(:func:`check_motion`: a rotation must be orthonormal with determinant +1; nothing is
orthonormalised silently).
"""
import copy

import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Boxes, Instances
from pycocotools import mask as mask_util

from ..geometry import check_intrinsics as geometry_check_intrinsics
from . import formats
from .pair_geometry import PairGeometry

__all__ = ["MotionDatasetMapper", "check_intrinsics", "check_motion"]

ROTATION_TOLERANCE = 1e-3  # max |R^T R - I| and |det R - 1| of a ground-truth rotation


def check_intrinsics(intrinsics, where):
    """Raise ValueError (naming ``where`` and the key) unless ``intrinsics`` is a pinhole matrix
    (`geometry.check_intrinsics`)."""
    geometry_check_intrinsics(intrinsics, where, "Fix the data set's camera file (e.g. "
                              "intrinsic.txt) or the dataset dict's 'intrinsics'.")


def check_motion(motion, where):
    """Raise ValueError (naming ``where``) unless ``motion`` ({"rotation", "translation",
    optional "pivot"}) has a rotation R with max |R^T R - I| <= ROTATION_TOLERANCE and
    det R > 0, and finite 3-vectors (metres)."""
    rotation = np.asarray(motion["rotation"], dtype=np.float64)
    if rotation.shape != (3, 3) or not np.isfinite(rotation).all():
        raise ValueError(f"{where}: 'rotation' must be a finite 3x3 matrix, got "
                         f"{rotation.tolist()}. Fix the ground truth.")
    error = np.abs(rotation.T @ rotation - np.eye(3)).max()
    det = np.linalg.det(rotation)
    if error > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise ValueError(
            f"{where}: 'rotation' {rotation.tolist()} is not a rotation matrix (max |R^T R - I| "
            f"= {error:.3g}, det = {det:.3g}; both must be within {ROTATION_TOLERANCE} of a "
            "rotation's). Fix the ground truth (poses / extrinsics) or leave the object out.")
    for key in ("translation", "pivot"):
        if key in motion:
            vector = np.asarray(motion[key], dtype=np.float64)
            if vector.shape != (3,) or not np.isfinite(vector).all():
                raise ValueError(f"{where}: '{key}' must be 3 finite numbers (metres), got "
                                 f"{vector.tolist()}. Fix the ground truth.")


def _photometric(images, brightness, contrast, saturation, image_format):
    """Same random brightness/contrast/saturation map on every image (HxWx3 uint8)."""
    b, c, s = (np.random.uniform(*r) for r in (brightness, contrast, saturation))
    rgb_weights = np.array([0.299, 0.587, 0.114], np.float32)
    if image_format == "BGR":
        rgb_weights = rgb_weights[::-1].copy()
    grey_mean = None
    out = []
    for image in images:
        x = image.astype(np.float32) * b
        if grey_mean is None:
            grey_mean = float((x @ rgb_weights).mean())
        x = (x - grey_mean) * c + grey_mean
        grey = (x @ rgb_weights)[..., None]
        x = grey + s * (x - grey)
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return out


def _check_size(array, path, expected, reference):
    """Raise ValueError naming ``path`` unless ``array`` is expected[0] x expected[1] (HxW)."""
    if array.shape[:2] != expected:
        raise ValueError(
            f"'{path}' is {array.shape[1]}x{array.shape[0]} (WxH) but {reference} is "
            f"{expected[1]}x{expected[0]}: all files of a pair must have one size."
        )


class MotionDatasetMapper:
    """Reads a pair's files, applies one sampled augmentation, returns the model-input dict
    (keys: docs/method.md section 10)."""

    @configurable
    def __init__(self, is_train=True, *, augmentations, image_format="BGR", brightness=(1.0, 1.0),
                 contrast=(1.0, 1.0), saturation=(1.0, 1.0), load_flow=True, load_depth_next=True):
        """
        Args:
            is_train: photometric augmentation only in training.
            augmentations: Detectron2 Augmentations (resize, crop, horizontal flip only).
            image_format: "BGR" or "RGB" (cfg.INPUT.FORMAT).
            brightness, contrast, saturation: (min, max) factor ranges; (1, 1) = off.
            load_flow, load_depth_next: read the GT flow / frame-(t+1) depth when the dict has them.
        """
        if image_format not in ("BGR", "RGB"):
            raise ValueError(
                f"INPUT.FORMAT must be 'BGR' or 'RGB' for motion data, got '{image_format}'.")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(augmentations)
        self.image_format = image_format
        self.photometric = (tuple(brightness), tuple(contrast), tuple(saturation))
        self.load_flow = load_flow
        self.load_depth_next = load_depth_next

    @classmethod
    def from_config(cls, cfg, is_train=True):
        if cfg.INPUT.RANDOM_FLIP == "vertical":
            raise ValueError("INPUT.RANDOM_FLIP='vertical' is not supported for motion data; use "
                             "'horizontal' or 'none'.")
        augs = utils.build_augmentation(cfg, is_train)
        if is_train and cfg.INPUT.CROP.ENABLED:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        return {
            "is_train": is_train,
            "augmentations": augs,
            "image_format": cfg.INPUT.FORMAT,
            "brightness": cfg.INPUT.BRIGHTNESS,
            "contrast": cfg.INPUT.CONTRAST,
            "saturation": cfg.INPUT.SATURATION,
            "load_flow": cfg.INPUT.LOAD_FLOW,
            "load_depth_next": cfg.INPUT.LOAD_DEPTH_NEXT,
        }

    # ------------------------------------------------------------------ reading
    def _read_image(self, path):
        image = formats.read_image(path)
        return image[..., ::-1].copy() if self.image_format == "RGB" else image

    @staticmethod
    def _read_depth(record, key):
        path = record[key]
        if record.get("depth_format", "depth_png") == "kitti_disparity":
            return formats.read_kitti_depth_png(path, record["disparity_to_depth"])
        return formats.read_depth_png(path)

    @staticmethod
    def _read_flow(path, flow_format):
        if flow_format == "kitti":
            return formats.read_kitti_flow_png(path)
        if flow_format == "flo":
            flow = formats.read_flo(path)
            valid = np.isfinite(flow).all(axis=2)
            return np.where(valid[..., None], flow, 0).astype(np.float32), valid
        return formats.read_vkitti_flow_png(path)

    def read_pair(self, record):
        """Read the files of a dataset dict at their own size: (frame t HxWx3, {"image_next",
        "depth", "depth_next", "flow", "flow_valid", "flow_noc_valid"} where present)."""
        image = self._read_image(record["file_name"])
        size = image.shape[:2]
        expected = (record.get("height", size[0]), record.get("width", size[1]))
        _check_size(image, record["file_name"], expected, "the dataset dict's (width, height)")
        next_path = record["file_name_next"]
        dense = {"image_next": (self._read_image(next_path), next_path)}
        dense["depth"] = (self._read_depth(record, "depth_file_name"), record["depth_file_name"])
        if self.load_depth_next and "depth_file_name_next" in record:
            dense["depth_next"] = (self._read_depth(record, "depth_file_name_next"),
                                   record["depth_file_name_next"])
        if self.load_flow and "flow_file_name" in record:
            flow_format = record.get("flow_format", "vkitti")
            flow, valid = self._read_flow(record["flow_file_name"], flow_format)
            dense["flow"] = (flow, record["flow_file_name"])
            dense["flow_valid"] = (valid, record["flow_file_name"])
            if "flow_noc_file_name" in record:
                _, noc = self._read_flow(record["flow_noc_file_name"], flow_format)
                dense["flow_noc_valid"] = (noc, record["flow_noc_file_name"])
        for array, path in dense.values():
            _check_size(array, path, expected, f"the pair's frame t '{record['file_name']}'")
        return image, {key: array for key, (array, _) in dense.items()}

    # ------------------------------------------------------------------ mapping
    def __call__(self, dataset_dict):
        record = copy.deepcopy(dataset_dict)
        pair = record.get("image_id", record["file_name"])
        where = f"pair '{pair}' ('{record['file_name']}')"
        check_intrinsics(record.get("intrinsics"), where)
        if "camera_motion" in record:
            check_motion(record["camera_motion"], f"{where}, 'camera_motion'")
        for annotation in record.get("annotations", ()):
            if "motion" in annotation:
                check_motion(annotation["motion"],
                             f"{where}, track {annotation.get('track_id', '?')} 'motion'")
        try:
            image, dense = self.read_pair(record)
        except (OSError, ValueError) as error:
            raise type(error)(f"{error} (pair '{pair}')") from error
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        geometry = PairGeometry(transforms, record["intrinsics"])
        image_next = transforms.apply_image(dense.pop("image_next"))
        if self.is_train and any(r != (1.0, 1.0) for r in self.photometric):
            image, image_next = _photometric([image, image_next], *self.photometric,
                                             self.image_format)

        out = {
            "image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "image_next": torch.as_tensor(np.ascontiguousarray(image_next.transpose(2, 0, 1))),
            "intrinsics": geometry.intrinsics.to(torch.float32),
            "height": record.get("height", dense["depth"].shape[0]),
            "width": record.get("width", dense["depth"].shape[1]),
            "file_name": record["file_name"],
            "image_id": record.get("image_id", record["file_name"]),
        }
        for key in ("depth", "depth_next"):
            if key in dense:
                out[key] = torch.as_tensor(geometry.dense(dense[key]))[None]
        if "flow" in dense:
            out["flow"] = torch.as_tensor(geometry.flow(dense["flow"]).transpose(2, 0, 1).copy())
            out["flow_valid"] = torch.as_tensor(geometry.dense(dense["flow_valid"]))
        if "flow_noc_valid" in dense:
            out["flow_noc_valid"] = torch.as_tensor(geometry.dense(dense["flow_noc_valid"]))
        if "camera_motion" in record:
            cam = record["camera_motion"]
            rotation, translation, _ = geometry.motion(cam["rotation"], cam["translation"])
            out["camera_motion"] = {
                "rotation": torch.as_tensor(rotation, dtype=torch.float32),
                "translation": torch.as_tensor(translation, dtype=torch.float32),
                "moving": torch.tensor(bool(cam.get("moving", True))),
            }
        if "annotations" in record:
            out["instances"] = self._instances(record["annotations"], geometry, image.shape[:2],
                                               dense["depth"].shape[:2])
        return out

    @staticmethod
    def _instances(annotations, geometry, image_size, input_size):
        annotations = [a for a in annotations if a.get("iscrowd", 0) == 0]
        height, width = input_size
        if annotations:
            rles = [a["segmentation"] for a in annotations]
            masks = mask_util.decode(rles)  # (H, W, N) uint8
            if masks.shape[:2] != (height, width):
                raise ValueError(f"Annotation masks are {masks.shape[1]}x{masks.shape[0]} (WxH), "
                                 f"the pair is {width}x{height}.")
            masks = geometry.dense(masks).reshape(image_size + (len(annotations),))
        else:
            masks = np.zeros(image_size + (0,), np.uint8)
        rows, cols = masks.any(axis=1), masks.any(axis=0)  # (H', N), (W', N)
        keep = rows.any(axis=0)
        masks, rows, cols = masks[:, :, keep], rows[:, keep], cols[:, keep]
        # box of each mask: [x0, y0, x1 + 1, y1 + 1] (as BitMasks.get_bounding_boxes)
        boxes = np.stack([cols.argmax(axis=0), rows.argmax(axis=0),
                          len(cols) - cols[::-1].argmax(axis=0),
                          len(rows) - rows[::-1].argmax(axis=0)], axis=1)
        instances = Instances(image_size)
        instances.gt_masks = BitMasks(torch.as_tensor(masks.transpose(2, 0, 1).astype(bool)))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        kept = [a for a, k in zip(annotations, keep.tolist()) if k]
        instances.gt_classes = torch.tensor([a["category_id"] for a in kept], dtype=torch.int64)
        if all("motion" in a for a in annotations):
            motions = [geometry.motion(a["motion"]["rotation"], a["motion"]["translation"],
                                       a["motion"]["pivot"]) for a in kept]
            instances.gt_rotations = torch.as_tensor(
                np.array([m[0] for m in motions]).reshape(-1, 3, 3), dtype=torch.float32)
            instances.gt_translations = torch.as_tensor(
                np.array([m[1] for m in motions]).reshape(-1, 3), dtype=torch.float32)
            instances.gt_pivots = torch.as_tensor(
                np.array([m[2] for m in motions]).reshape(-1, 3), dtype=torch.float32)
            instances.gt_moving = torch.tensor([bool(a["motion"]["moving"]) for a in kept],
                                               dtype=torch.bool)
        return instances
