"""MotionPredictor: Detectron2's DefaultPredictor for frame pairs with depth and intrinsics."""
import numpy as np
import torch
from detectron2.engine import DefaultPredictor

from ..data.pair_geometry import PairGeometry
from ..geometry import check_intrinsics
from ..modeling.meta_arch import MotionRCNN, SfMNet
from .checkpoint import MotionCheckpointer

__all__ = ["MotionPredictor"]


def _array(value, name, ndim, dtype):
    array = np.asarray(value.cpu() if torch.is_tensor(value) else value)
    if array.ndim != ndim:
        raise ValueError(f"MotionPredictor: '{name}' must have {ndim} dimensions, got shape "
                         f"{array.shape}")
    return array.astype(dtype, copy=False)


class MotionPredictor(DefaultPredictor):
    """Run a Motion R-CNN, FlowNetS or SfM-Net model on one frame pair, as users have it.

    Like ``DefaultPredictor``: builds the model from ``cfg`` in eval mode, loads
    ``cfg.MODEL.WEIGHTS`` (with :class:`MotionCheckpointer`), and applies the config's test
    resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``) to ALL inputs: both frames
    (bilinear), depth (nearest; 0 stays invalid) and K (rescaled). Outputs are at the
    original size.

    Example::

        predictor = MotionPredictor(cfg)
        out = predictor(frame_t, frame_t1, depth, K)
        out["instances"], out["camera_motion"], out["flow"]
        out["points"], out["scene_flow"]  # 3D: (3, H, W) m, camera t, NaN where depth is invalid
    """

    def __init__(self, cfg):
        weights = cfg.MODEL.WEIGHTS
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = ""  # loaded below by the checkpointer that knows 6/12-channel stems
        super().__init__(cfg)
        if weights:
            MotionCheckpointer.from_config(cfg, self.model).load(weights)

    def required_inputs(self):
        """What the model needs besides the two frames: {"depth": why, "intrinsics": why},
        each ``why`` a phrase saying what it is needed for, or None when it is not needed.
        FlowNetS needs neither; SfM-Net needs K (it composes its flow from its own depth)."""
        model, depth, intrinsics = self.model, None, None
        if isinstance(model, MotionRCNN):
            if model.xyz_input:
                depth = "its XYZ input (MODEL.MOTION_RCNN.XYZ_INPUT)"
            elif model.flow_output and (model.motion_on or model.camera_head is not None):
                depth = "composing the flow from the motions (MODEL.MOTION_RCNN.FLOW_OUTPUT)"
            intrinsics = depth
        elif isinstance(model, SfMNet):
            if model.use_gt_depth:
                depth = "MODEL.SFMNET.USE_GT_DEPTH (given depth instead of its depth network)"
            intrinsics = "composing the flow from its depth and motions"
        return {"depth": depth, "intrinsics": intrinsics}

    def __call__(self, image, image_next=None, depth=None, intrinsics=None, depth_next=None):
        """
        Args:
            image, image_next: HxWx3 uint8 frames t and t+1 in BGR (OpenCV's order; converted
                to the config's INPUT.FORMAT).
            depth: HxW float depth of frame t in metres (0, negative or non-finite = invalid).
                Needed by Motion R-CNN (XYZ input and flow) and by SfM-Net with given depth.
            intrinsics: 3x3 K of the given frames (pixels).
            depth_next: optional HxW depth of frame t+1.
        Returns:
            the model's output dict for the pair (docs/method.md section 10); Motion R-CNN and
            SfM-Net include "points" (P at t) and "scene_flow" (its 3D displacement), (3, H, W)
            metres in camera-t coordinates, NaN where depth is invalid, from the same
            composition as "flow" (utils/scene_flow_files.py writes them).
        """
        if image_next is None:
            raise TypeError(
                "MotionPredictor needs both frames: predictor(image, image_next, depth, "
                "intrinsics) with BGR uint8 frames, depth in metres and the 3x3 K."
            )
        image = _array(image, "image", 3, np.uint8)
        image_next = _array(image_next, "image_next", 3, np.uint8)
        if image.shape != image_next.shape:
            raise ValueError(f"MotionPredictor: image {image.shape} and image_next "
                             f"{image_next.shape} must have the same size")
        height, width = image.shape[:2]
        if self.input_format == "RGB":
            image, image_next = image[:, :, ::-1], image_next[:, :, ::-1]
        transform = self.aug.get_transform(image)
        K = np.eye(3) if intrinsics is None else _array(intrinsics, "intrinsics", 2, np.float64)
        check_intrinsics(K, "MotionPredictor", "Pass the 3x3 K of the given frames.")
        geometry = PairGeometry(transform, K)
        inputs = {
            "image": torch.as_tensor(transform.apply_image(image).transpose(2, 0, 1).copy()),
            "image_next": torch.as_tensor(
                transform.apply_image(image_next).transpose(2, 0, 1).copy()),
            "height": height,
            "width": width,
        }
        if intrinsics is not None:
            inputs["intrinsics"] = geometry.intrinsics.to(torch.float32)
        for key, value in (("depth", depth), ("depth_next", depth_next)):
            if value is None:
                continue
            value = _array(value, key, 2, np.float32)
            if value.shape != (height, width):
                raise ValueError(f"MotionPredictor: '{key}' is {value.shape} but the frames are "
                                 f"{(height, width)} (HxW)")
            value = np.where(np.isfinite(value) & (value > 0), value, 0).astype(np.float32)
            inputs[key] = torch.as_tensor(geometry.dense(value))[None]
        with torch.no_grad():
            return self.model([inputs])[0]
