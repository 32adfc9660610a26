"""Motion R-CNN: Mask R-CNN on a frame pair (+ XYZ) with camera and per-instance 3D motion.

Input (one dict per pair, docs/method.md section 10): image, image_next (3xHxW uint8),
depth (1xHxW metres), depth_next (optional), intrinsics (3x3, resized image), height/width
(original size), and in training instances (gt_* incl. motions), camera_motion, flow/flow_valid.

Network input (docs/method.md section 1): frame t and frame t+1, each normalised with PIXEL_MEAN /
PIXEL_STD, plus with XYZ_INPUT the point clouds XYZ_t = backproject(depth, K) and
XYZ_t+1 = backproject(depth_next or depth, K), divided by XYZ_SCALE, 0 where depth is invalid:
6 or 12 channels, padded to the backbone's size divisibility.

Output (docs/method.md section 10): "instances" at the original size with pred_boxes, scores,
pred_classes, pred_masks and, with the motion head, pred_rotations, pred_translations,
pred_pivots, pred_moving_scores; "camera_motion" {"rotation", "translation", "moving_score"}
with the camera head; "flow" (2xHxW px), "flow_valid" (HxW), "points" (3xHxW, P = d K^-1 x),
"scene_flow" (3xHxW, P'' - P; metres, camera t, NaN where depth is invalid) at the original size
when FLOW_OUTPUT (and there is a motion to compose). Motions are gated: an instance or camera
whose moving probability is <= MOVING_THRESHOLD gets R = I, t = 0 (pivots are kept). With
OBJECT_SWEEP.ENABLED the detections' motions (and, with its MOVING_COST_RATIO, their moving
scores) are first refined by a per-object sweep (`ObjectMotionSweep`, at the input's size:
needs depth, and depth_next for its depth term).
The flow is `geometry.compose_flow_indexed` of these motions with the binary masks (the
higher-scoring detection wins where masks overlap), on the depth resized to the original size
(nearest), K rescaled by `geometry.scale_intrinsics`.

Training losses (docs/method.md section 6, SUPERVISION): "motion" adds
loss_motion_{rot,trans,pivot,moving} (RoI heads) and loss_cam_{rot,trans,moving}; "flow" adds loss_flow_roi and loss_flow_cam
(camera-only flow vs GT flow outside all GT instances); "both" all of them. In the flow losses
the camera motion is soft-gated by its moving probability p (A = (1 - p) I + p R, b = p t), as
each RoI's motion is by its mask times its moving probability, so that the moving logits get a
gradient too; every head takes part in every step (DDP needs no find_unused_parameters).

With MOTION_ON and CAMERA_MOTION_ON False the model is exactly Mask R-CNN (GeneralizedRCNN)
with the C6 backbone on the stacked input.
"""
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, GeneralizedRCNN, build_backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage
from torch import nn

from ...geometry import (
    camera_flow,
    check_intrinsics,
    compose_flow_indexed,
    instance_index_from_masks,
    scale_intrinsics,
)
from ..camera_head import build_camera_motion_head
from ..layers import xyz_and_change
from ..motion import MOTION_CAMERA_KEY, MOTION_XYZ_KEY, gated_motion, supervision_from_config
from ..motion_losses import FlowSupervision, camera_flow_loss
from ..object_sweep import ObjectMotionSweep
from .frame_pairs import (batch_background, batch_flow_targets, batch_tensors, padded_batch,
                          require_key, sizes_only, write_frames, write_xyz)

__all__ = ["MotionRCNN"]


@META_ARCH_REGISTRY.register()
class MotionRCNN(GeneralizedRCNN):
    """GeneralizedRCNN on stacked frames (+ XYZ) with a camera motion head on C6 and a RoI
    motion head in the ROI heads (MotionROIHeads / MotionRes5ROIHeads)."""

    @configurable
    def __init__(self, *, camera_head: Optional[nn.Module] = None,
                 camera_in_feature: str = "res6", motion_on: bool = True,
                 xyz_input: bool = True, xyz_scale: float = 1.0, supervision: str = "motion",
                 flow_output: bool = True, mask_threshold: float = 0.5,
                 moving_threshold: float = 0.5, camera_flow_loss_weight: float = 1.0,
                 object_sweep: Optional[ObjectMotionSweep] = None, **kwargs):
        """
        Args:
            camera_head: camera motion head on features[camera_in_feature] (or on the network
                input itself when camera_in_feature is "input"), or None.
            motion_on: the ROI heads predict per-instance motions (MotionHeadMixin).
            xyz_input: append XYZ_t and XYZ_t+1 (12 input channels instead of 6).
            xyz_scale: XYZ channels are divided by this (metres).
            supervision: "motion", "flow" or "both".
            flow_output: compose the full-resolution flow at inference (needs depth).
            mask_threshold: binarisation of the pasted masks (original size).
            moving_threshold: moving probability <= this -> identity motion.
            camera_flow_loss_weight: weight of loss_flow_cam.
            object_sweep: test-time refinement of the detections' motions, or None.
            kwargs: arguments of GeneralizedRCNN (backbone with 6/12 input channels, ...).
        """
        super().__init__(**kwargs)
        self.camera_head = camera_head
        self.camera_in_feature = camera_in_feature
        self.motion_on = motion_on
        self.xyz_input = xyz_input
        self.xyz_scale = xyz_scale
        self.supervision = supervision
        self.flow_output = flow_output
        self.mask_threshold = mask_threshold
        self.moving_threshold = moving_threshold
        self.camera_flow_loss_weight = camera_flow_loss_weight
        self.object_sweep = object_sweep
        if object_sweep is not None and not (motion_on and self.roi_heads.mask_on):
            raise ValueError("MODEL.MOTION_RCNN.OBJECT_SWEEP.ENABLED refines the motions of the "
                             "predicted masks: it needs MODEL.MOTION_RCNN.MOTION_ON and "
                             "MODEL.MASK_ON True (or set it False)")
        if motion_on and not getattr(self.roi_heads, "motion_on", False):
            raise ValueError(
                "MODEL.MOTION_RCNN.MOTION_ON is True but MODEL.ROI_HEADS.NAME builds "
                f"{type(self.roi_heads).__name__} without a motion head: use MotionROIHeads "
                "(FPN) or MotionRes5ROIHeads (C4), or set MOTION_ON False"
            )
        if flow_output and motion_on and not self.roi_heads.mask_on:
            raise ValueError(
                "MODEL.MOTION_RCNN.FLOW_OUTPUT is True but MODEL.MASK_ON is False: the flow is "
                "composed from the predicted masks; set MODEL.MASK_ON True or FLOW_OUTPUT False"
            )

    @classmethod
    def from_config(cls, cfg):
        config = cfg.MODEL.MOTION_RCNN
        backbone = build_backbone(cfg, ShapeSpec(channels=12 if config.XYZ_INPUT else 6))
        shapes = backbone.output_shape()
        in_feature = cfg.MODEL.CAMERA_MOTION_HEAD.IN_FEATURE
        camera_head = None
        if config.CAMERA_MOTION_ON:
            # "input": the network input itself (CorrelationCameraHead)
            readable = dict(shapes, input=ShapeSpec(channels=12 if config.XYZ_INPUT else 6,
                                                    stride=1))
            if in_feature not in readable:
                raise ValueError(
                    f"MODEL.CAMERA_MOTION_HEAD.IN_FEATURE = {in_feature!r} is not an output of the "
                    f"backbone ({sorted(shapes)}) nor 'input': add it to MODEL.RESNETS.OUT_FEATURES"
                )
            camera_head = build_camera_motion_head(cfg, readable[in_feature])
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, shapes),
            "roi_heads": build_roi_heads(cfg, shapes),
            "input_format": cfg.INPUT.FORMAT,
            "vis_period": cfg.VIS_PERIOD,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "camera_head": camera_head,
            "camera_in_feature": in_feature,
            "motion_on": config.MOTION_ON,
            "xyz_input": config.XYZ_INPUT,
            "xyz_scale": config.XYZ_SCALE,
            "supervision": supervision_from_config(cfg),
            "flow_output": config.FLOW_OUTPUT,
            "mask_threshold": config.MASK_THRESHOLD,
            "moving_threshold": config.MOVING_THRESHOLD,
            "camera_flow_loss_weight": cfg.MODEL.CAMERA_MOTION_HEAD.FLOW_LOSS_WEIGHT,
            "object_sweep": (ObjectMotionSweep(cfg) if config.OBJECT_SWEEP.ENABLED else None),
        }

    # ------------------------------------------------------------------ input
    @staticmethod
    def _require(x, key, why):
        require_key([x], key, why)
        return x[key]

    def _intrinsics(self, x, why):
        """x["intrinsics"] as a float32 (3, 3) tensor on the model's device; ValueError naming the
        input unless it is a pinhole K (finite, fx > 0, fy > 0, last row 0 0 1)."""
        k = check_intrinsics(self._require(x, "intrinsics", why),
                             f"model input {x.get('image_id', x.get('file_name', '?'))!r}",
                             "K is that of the resized image the model receives.")
        return k.to(self.device, torch.float32)

    def _network_input(self, x, out=None):
        """Normalised frames t, t+1 (+ XYZ_t, XYZ_t+1) stacked: (6 or 12, H, W), written into
        `out` when given (a view into the padded batch: no per-pair copy)."""
        frames = [self._require(x, key, "the two-frame input") for key in ("image", "image_next")]
        size = tuple(frames[0].shape[-2:])
        if out is None:
            out = torch.empty((12 if self.xyz_input else 6, *size), device=self.device)
        write_frames(frames, self.pixel_mean, self.pixel_std, out[:6], x.get("file_name", ""))
        if not self.xyz_input:
            return out
        why = "MODEL.MOTION_RCNN.XYZ_INPUT (set it False for the frames-only input)"
        depth = self._require(x, "depth", why)
        if tuple(depth.shape[-2:]) != size:
            raise ValueError(f"input {x.get('file_name', '')!r}: depth {tuple(depth.shape)} and "
                             f"image {tuple(frames[0].shape)} differ in size")
        intrinsics = self._intrinsics(x, why)
        write_xyz(depth, intrinsics, self.xyz_scale, out[6:9])
        if "depth_next" in x:
            write_xyz(x["depth_next"], intrinsics, self.xyz_scale, out[9:12])
        else:  # XYZ_t+1 = XYZ_t
            out[9:12] = out[6:9]
        return out

    def preprocess_image(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Normalise and stack the network inputs (6/12 channels) straight into their padded
        batch, an ImageList."""
        sizes = [self._require(x, "image", "the two-frame input").shape[-2:]
                 for x in batched_inputs]
        images = padded_batch(sizes, (12 if self.xyz_input else 6,),
                              self.backbone.size_divisibility, self.device)
        for x, batched, (h, w) in zip(batched_inputs, images.tensor, images.image_sizes):
            self._network_input(x, batched[:, :h, :w])
        return images

    def _proposals(self, images, features, batched_inputs, gt_instances):
        if self.proposal_generator is not None:
            return self.proposal_generator(images, features, gt_instances)
        self._require(batched_inputs[0], "proposals", "a model without proposal generator")
        return [x["proposals"].to(self.device) for x in batched_inputs], {}

    def _camera_input(self, images, features):
        """What the camera head reads: a backbone feature, or the network input ("input")."""
        if self.camera_in_feature == "input":
            return images.tensor
        return features[self.camera_in_feature]

    def _camera_intrinsics(self, batched_inputs):
        """(B, 3, 3) K of the inputs when the camera head reads them (its `needs_intrinsics`,
        e.g. SweepCameraHead), else None."""
        if not getattr(self.camera_head, "needs_intrinsics", False):
            return None
        why = f"the camera head {type(self.camera_head).__name__}"
        return torch.stack([self._intrinsics(x, why) for x in batched_inputs])

    def _features_and_camera(self, images, intrinsics=None):
        """Backbone features plus the entries the RoI motion head reads
        (MODEL.ROI_MOTION_HEAD.IN_FEATURES "xyz", "camera"), and the camera head's output
        (None without it); `intrinsics` (B, 3, 3) go to a camera head that needs them."""
        features = self.backbone(images.tensor)
        camera = None
        if self.camera_head is not None:
            head_input = self._camera_input(images, features)
            camera = (self.camera_head(head_input) if intrinsics is None
                      else self.camera_head(head_input, intrinsics))
        keys = getattr(self.roi_heads, "motion_context_keys", ())
        if MOTION_XYZ_KEY in keys:
            features[MOTION_XYZ_KEY] = xyz_and_change(images.tensor)
        if MOTION_CAMERA_KEY in keys:  # an input, not a path for the RoI losses' gradients
            features[MOTION_CAMERA_KEY] = camera["translations"].detach()
        return features, camera

    # --------------------------------------------------------------- training
    @property
    def uses_flow_supervision(self):
        """Flow losses are computed (SUPERVISION flow/both and something predicts motion)."""
        return self.supervision in ("flow", "both") and (
            self.motion_on or self.camera_head is not None)

    def forward(self, batched_inputs: List[Dict[str, torch.Tensor]]):
        """Training: dict of losses (Mask R-CNN's plus loss_motion_*, loss_cam_*,
        loss_flow_roi, loss_flow_cam as configured). Inference: see `inference`."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        gt_instances = None
        if "instances" in batched_inputs[0]:
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        features, camera = self._features_and_camera(
            images, self._camera_intrinsics(batched_inputs))
        proposals, proposal_losses = self._proposals(images, features, batched_inputs,
                                                     gt_instances)
        flow_targets = None
        if self.uses_flow_supervision:
            flow_targets = self._flow_targets(batched_inputs, camera)
        if self.motion_on:
            _, losses = self.roi_heads(images, features, proposals, gt_instances,
                                       flow_targets=flow_targets)
        else:
            _, losses = self.roi_heads(images, features, proposals, gt_instances)
        if self.vis_period > 0 and get_event_storage().iter % self.vis_period == 0:
            self.visualize_training(batched_inputs, proposals)
        losses.update(proposal_losses)
        if camera is not None:
            losses.update(self._camera_losses(camera, batched_inputs, flow_targets, gt_instances,
                                              images))
        return losses

    def _flow_targets(self, batched_inputs, camera):
        """Depth, K and GT flow batched like the network input, and the soft-gated camera."""
        size_divisibility = self.backbone.size_divisibility
        why = f"MODEL.MOTION_RCNN.SUPERVISION = {self.supervision!r} (or set it 'motion')"
        depth = batch_tensors([self._require(x, "depth", why) for x in batched_inputs],
                              size_divisibility, self.device).tensor
        flow, flow_valid = batch_flow_targets(batched_inputs, size_divisibility, self.device)
        rotation = translation = None
        if camera is not None:
            rotation, translation = gated_motion(camera["rotations"], camera["translations"],
                                                 camera["moving_probs"])
        return FlowSupervision(
            depth=depth, intrinsics=torch.stack([self._intrinsics(x, why) for x in batched_inputs]),
            flow=flow, flow_valid=flow_valid, camera_rotation=rotation,
            camera_translation=translation)

    def _stacked(self, dicts, key, dtype):
        return torch.stack([torch.as_tensor(d[key], dtype=dtype, device=self.device)
                            for d in dicts])

    def _camera_losses(self, camera, batched_inputs, flow_targets, gt_instances, images):
        losses = {}
        if self.supervision in ("motion", "both"):
            why = (f"MODEL.MOTION_RCNN.SUPERVISION = {self.supervision!r} with the camera head "
                   "(or set MODEL.MOTION_RCNN.CAMERA_MOTION_ON False / SUPERVISION 'flow')")
            gt = [self._require(x, "camera_motion", why) for x in batched_inputs]
            losses.update(self.camera_head.losses(
                camera, *(self._stacked(gt, key, dtype) for key, dtype in (
                    ("rotation", torch.float32), ("translation", torch.float32),
                    ("moving", torch.bool)))))
        if flow_targets is not None:
            losses["loss_flow_cam"] = self.camera_flow_loss_weight * camera_flow_loss(
                flow_targets, batch_background(gt_instances, images))
        return losses

    # -------------------------------------------------------------- inference
    def inference(self, batched_inputs: List[Dict[str, torch.Tensor]],
                  detected_instances: Optional[List[Instances]] = None,
                  do_postprocess: bool = True):
        """As GeneralizedRCNN.inference; with do_postprocess the outputs of the module
        docstring, without it the raw per-image Instances (resized input, ungated motions)."""
        if self.training:
            raise RuntimeError("MotionRCNN.inference runs in eval mode: call model.eval() first")
        images = self.preprocess_image(batched_inputs)
        features, camera = self._features_and_camera(
            images, self._camera_intrinsics(batched_inputs))
        # the pixels are read: free them before the RoI heads (the mask head's peak)
        images = sizes_only(images)
        if detected_instances is None:
            proposals, _ = self._proposals(images, features, batched_inputs, None)
            results, _ = self.roi_heads(images, features, proposals, None)
        else:
            detected_instances = [x.to(self.device) for x in detected_instances]
            results = self.roi_heads.forward_with_given_boxes(features, detected_instances)
        if not do_postprocess:
            return results
        return [self._postprocess_one(results[i], batched_inputs[i], images.image_sizes[i],
                                      camera, i) for i in range(len(results))]

    def _postprocess_one(self, results, x, image_size, camera, index):
        height, width = x.get("height", image_size[0]), x.get("width", image_size[1])
        out = {}
        camera_rotation = camera_translation = None
        if camera is not None:
            score = camera["moving_probs"][index]
            camera_rotation, camera_translation = gated_motion(
                camera["rotations"][index], camera["translations"][index],
                score > self.moving_threshold)
            out["camera_motion"] = {"rotation": camera_rotation,
                                    "translation": camera_translation, "moving_score": score}
        if self.object_sweep is not None:
            results = self._refine_object_motions(results, x, camera_rotation, camera_translation)
        instances = detector_postprocess(results, height, width, self.mask_threshold)
        out["instances"] = instances
        if self.motion_on:
            instances.pred_rotations, instances.pred_translations = gated_motion(
                instances.pred_rotations, instances.pred_translations,
                instances.pred_moving_scores > self.moving_threshold)
        if self.flow_output and (self.motion_on or camera is not None):
            out["flow"], out["flow_valid"], out["points"], out["scene_flow"] = self._output_flow(
                x, instances, image_size, (height, width), camera_rotation, camera_translation)
        return out

    def _refine_object_motions(self, results, x, camera_rotation, camera_translation):
        """`ObjectMotionSweep` of the raw detections of input `x` (network input size)."""
        why = "MODEL.MOTION_RCNN.OBJECT_SWEEP.ENABLED (provide depth, or set it False)"
        gray = [((self._require(x, key, why).to(self.device, torch.float32) - self.pixel_mean)
                 / self.pixel_std).mean(dim=0) for key in ("image", "image_next")]
        depth = self._require(x, "depth", why).to(self.device, torch.float32)[0]
        depth_t1 = x.get("depth_next")
        if depth_t1 is not None:
            depth_t1 = depth_t1.to(self.device, torch.float32)[0]
        if camera_rotation is None:
            camera_rotation = torch.eye(3, device=self.device)
            camera_translation = torch.zeros(3, device=self.device)
        return self.object_sweep(results, gray[0], gray[1], depth, depth_t1,
                                 self._intrinsics(x, why), camera_rotation, camera_translation,
                                 self.moving_threshold)

    def _output_flow(self, x, instances, image_size, output_size, camera_rotation,
                     camera_translation):
        """Flow (2, H, W), valid (H, W), points and scene flow (3, H, W) at `output_size`."""
        why = "MODEL.MOTION_RCNN.FLOW_OUTPUT (provide depth, 1xHxW metres, or set it False)"
        depth = self._require(x, "depth", why).to(self.device, torch.float32)[None]
        if tuple(depth.shape[-2:]) != tuple(output_size):
            depth = F.interpolate(depth, size=tuple(output_size), mode="nearest-exact")
        intrinsics = scale_intrinsics(self._intrinsics(x, why), output_size[1] / image_size[1],
                                      output_size[0] / image_size[0])[None]
        cam_r = None if camera_rotation is None else camera_rotation[None]
        cam_t = None if camera_translation is None else camera_translation[None]
        if self.motion_on:
            index = instance_index_from_masks(instances.pred_masks, instances.scores)
            result = compose_flow_indexed(
                depth, intrinsics, index[None], instances.pred_rotations[None],
                instances.pred_translations[None], instances.pred_pivots[None], cam_r, cam_t,
                with_points=True)
        else:
            result = camera_flow(depth, intrinsics, cam_r, cam_t, with_points=True)
        return tuple(r[0] for r in result)

