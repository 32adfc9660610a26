"""RoI heads with a motion branch: Mask R-CNN's heads plus per-RoI 3D motion (docs/method.md
sections 3, 6).

`MotionROIHeads` extends `StandardROIHeads` (FPN) and `MotionRes5ROIHeads` extends
`Res5ROIHeads` (the thesis' C4 variant); `MotionHeadMixin` holds what they share.

Training: the motion head reads, per sampled foreground RoI (IoU >= 0.5), what
MODEL.ROI_MOTION_HEAD.IN_FEATURES names: the box head's features (computed once for box and
motion), the RoI's XYZ_t and XYZ change RoIAligned from features[MOTION_XYZ_KEY], and the camera
head's translation features[MOTION_CAMERA_KEY] (both put there by MotionRCNN). Its prediction
for the GT class is
supervised by 3D motion, by GT optical flow, or both (cfg.MODEL.MOTION_RCNN.SUPERVISION).
Flow supervision also needs each RoI's mask logits, so the mask head's `layers` and the stock
`mask_rcnn_loss` are called separately then. Inference: the motion head runs on the final
detections (`forward_with_given_boxes`). Its "box" input is, with FPN, the box head's features
of the proposal each detection came from (kept by `_forward_box`, as the head reads them in
training; the box head runs again on the boxes only when they are given), with C4 the res5
features of the detection boxes shared with the mask head; "xyz" is pooled over the detection
boxes. It writes pred_rotations, pred_translations, pred_pivots and pred_moving_scores for the
predicted class (ungated; the meta-architecture applies the moving threshold). The mask head
reads MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK detections at a time at inference (the same masks
to float rounding, a lower memory peak).

With cfg.MODEL.MOTION_RCNN.MOTION_ON False no motion head is built and both classes behave
exactly like their Detectron2 parents, but for the chunked mask head at inference.
"""
from typing import Dict, List, Optional

import torch
from detectron2.config import configurable
from detectron2.layers import ShapeSpec, cat
from detectron2.modeling.poolers import convert_boxes_to_pooler_format
from detectron2.modeling.roi_heads import (
    ROI_HEADS_REGISTRY,
    Res5ROIHeads,
    StandardROIHeads,
    select_foreground_proposals,
)
from detectron2.modeling.roi_heads.mask_head import BaseMaskRCNNHead, mask_rcnn_loss
from detectron2.structures import Boxes, ImageList, Instances
from torchvision.ops import roi_align

from ..motion import MOTION_CAMERA_KEY, MOTION_XYZ_KEY, supervision_from_config
from ..motion_losses import FlowSupervision, roi_flow_loss
from .motion_head import build_motion_head

__all__ = ["MOTION_IN_FEATURES", "MotionHeadMixin", "MotionROIHeads", "MotionRes5ROIHeads"]

# Values of cfg.MODEL.ROI_MOTION_HEAD.IN_FEATURES.
MOTION_IN_FEATURES = ("box", "xyz", "camera")
_GT_MOTION_FIELDS = ("gt_rotations", "gt_translations", "gt_pivots", "gt_moving")
# Field of the FPN heads' detections at inference: the box head's features of the proposal
# each detection came from (MotionROIHeads._forward_box), removed once the motion head read it.
_PROPOSAL_FEATURES = "motion_proposal_box_features"


class MotionHeadMixin:
    """Motion branch shared by the FPN and C4 RoI heads: their constructor (Detectron2's RoI
    heads' arguments plus the motion branch's) and what the motion head reads."""

    @classmethod
    def _init_motion_head(cls, cfg, input_shape: ShapeSpec):
        """Constructor arguments of the motion branch; `input_shape` = per-RoI box feature."""
        if not cfg.MODEL.MOTION_RCNN.MOTION_ON:
            return {}
        supervision = supervision_from_config(cfg)
        if supervision != "motion" and not cfg.MODEL.MASK_ON:
            raise ValueError(
                f"MODEL.MOTION_RCNN.SUPERVISION = {supervision!r} composes flow from the "
                "predicted masks, but MODEL.MASK_ON is False: set MODEL.MASK_ON True or "
                "MODEL.MOTION_RCNN.SUPERVISION 'motion'"
            )
        head = cfg.MODEL.ROI_MOTION_HEAD
        in_features = tuple(head.IN_FEATURES)
        needs = {"xyz": ("MODEL.MOTION_RCNN.XYZ_INPUT", cfg.MODEL.MOTION_RCNN.XYZ_INPUT),
                 "camera": ("MODEL.MOTION_RCNN.CAMERA_MOTION_ON",
                            cfg.MODEL.MOTION_RCNN.CAMERA_MOTION_ON)}
        if not in_features or set(in_features) - set(MOTION_IN_FEATURES):
            raise ValueError(f"MODEL.ROI_MOTION_HEAD.IN_FEATURES = {list(in_features)}: use one "
                             f"or more of {list(MOTION_IN_FEATURES)}")
        for name in in_features:
            if name in needs and not needs[name][1]:
                raise ValueError(f"MODEL.ROI_MOTION_HEAD.IN_FEATURES has {name!r}, which needs "
                                 f"{needs[name][0]} True: set it, or drop {name!r}")
        pool = head.XYZ_POOL_SIZE
        dims = {"box": input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1),
                "xyz": 6 * pool * pool, "camera": 3}
        return {
            "motion_head": build_motion_head(
                cfg, ShapeSpec(channels=sum(dims[name] for name in in_features))),
            "motion_supervision": supervision,
            "flow_grid_size": head.FLOW_GRID_SIZE,
            "flow_loss_weight": head.FLOW_LOSS_WEIGHT,
            "motion_in_features": in_features,
            "xyz_pool_size": pool,
        }

    @classmethod
    def _init_mixin(cls, cfg, input_shape: ShapeSpec):
        """Constructor arguments of the mixin: the motion branch's and the mask chunk."""
        return {"mask_inference_chunk": cfg.MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK,
                **cls._init_motion_head(cfg, input_shape)}

    @configurable
    def __init__(self, *, motion_head=None, motion_supervision: str = "motion",
                 flow_grid_size: int = 14, flow_loss_weight: float = 1.0,
                 motion_in_features=("box",), xyz_pool_size: int = 5,
                 mask_inference_chunk: int = 0, **kwargs):
        """
        Args:
            motion_head: the RoI motion head, or None (the plain Detectron2 RoI heads).
            motion_supervision: "motion", "flow" or "both".
            flow_grid_size: m of the m x m flow-supervision grid per RoI.
            flow_loss_weight: weight of loss_flow_roi.
            motion_in_features: what the motion head reads ("box", "xyz", "camera").
            xyz_pool_size: RoIAlign output size of the "xyz" input.
            mask_inference_chunk: detections the mask head reads at a time at inference
                (0: all at once).
            kwargs: arguments of the Detectron2 RoI heads mixed with (StandardROIHeads,
                Res5ROIHeads).
        """
        super().__init__(**kwargs)
        self.motion_on = motion_head is not None
        self.motion_head = motion_head
        self.motion_supervision = motion_supervision
        self.flow_grid_size = flow_grid_size
        self.flow_loss_weight = flow_loss_weight
        self.motion_in_features = tuple(motion_in_features)
        self.xyz_pool_size = xyz_pool_size
        if mask_inference_chunk < 0:
            raise ValueError(f"MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK = {mask_inference_chunk}: "
                             "use 0 (all detections at once) or a positive number")
        self.mask_inference_chunk = mask_inference_chunk

    def _mask_inference(self, x, instances: List[Instances]):
        """The mask head at inference on the pooled features `x` (R, C, M, M) of the
        detections `instances`, at most `mask_inference_chunk` of one image's detections per
        call: the pred_masks of one call (each RoI's masks depend on its own features only; the
        convolutions may sum in another order), with the peak of the convolution workspace of
        one chunk, not all R. Not chunked while tracing: a trace would fix the number of
        chunks, and with it R."""
        chunk = self.mask_inference_chunk
        if chunk == 0 or torch.jit.is_tracing() or not torch.is_tensor(x) or len(x) <= chunk:
            return self.mask_head(x, instances)
        start = 0
        for image in instances:
            masks = []
            for first in range(0, max(len(image), 1), chunk):  # an empty image: one call
                part = image[first:first + chunk]
                self.mask_head(x[start + first:start + first + len(part)], [part])
                masks.append(part.pred_masks)
            image.pred_masks = cat(masks)
            start += len(image)
        return instances

    @property
    def motion_context_keys(self):
        """The entries the motion head reads from `features` beside the backbone's."""
        if not self.motion_on:
            return ()
        keys = {"xyz": MOTION_XYZ_KEY, "camera": MOTION_CAMERA_KEY}
        return tuple(keys[n] for n in self.motion_in_features if n in keys)

    def _motion_input(self, box_features, features, boxes: List[Boxes]):
        """(R, D) input of the motion head: the IN_FEATURES parts of each RoI concatenated.

        Args:
            box_features: (R, ...) the box head's features of the RoIs (None unless "box" is read).
            features: the backbone features plus the motion entries (`motion_context_keys`).
            boxes: the RoIs' boxes per image (pixels of the network input).
        """
        for key in self.motion_context_keys:
            if key not in features:
                raise ValueError(
                    f"MODEL.ROI_MOTION_HEAD.IN_FEATURES = {list(self.motion_in_features)} reads "
                    f"features[{key!r}], which MotionRCNN adds: call the RoI heads from it")
        rois = convert_boxes_to_pooler_format(boxes)
        parts = []
        for name in self.motion_in_features:
            if name == "box":
                parts.append(box_features.flatten(start_dim=1))
            elif name == "xyz":
                parts.append(roi_align(features[MOTION_XYZ_KEY], rois, self.xyz_pool_size,
                                       spatial_scale=1.0, sampling_ratio=2,
                                       aligned=True).flatten(start_dim=1))
            else:
                parts.append(features[MOTION_CAMERA_KEY][rois[:, 0].long()])
        return cat(parts, dim=1)

    @property
    def uses_flow_supervision(self):
        """True when the RoI flow loss is computed (and needs `flow_targets` in training)."""
        return self.motion_on and self.motion_supervision in ("flow", "both")

    def _mask_losses_and_logits(self, mask_features, fg_proposals):
        """Mask loss of the foreground RoIs, plus their mask logits when flow supervision needs
        them (else None)."""
        if not self.mask_on:
            return {}, None
        if not self.uses_flow_supervision:
            return self.mask_head(mask_features, fg_proposals), None
        if not isinstance(self.mask_head, BaseMaskRCNNHead):
            raise ValueError(
                "flow supervision needs the mask logits, which only mask heads derived from "
                f"BaseMaskRCNNHead expose; MODEL.ROI_MASK_HEAD.NAME builds "
                f"{type(self.mask_head).__name__}: use MaskRCNNConvUpsampleHead"
            )
        logits = self.mask_head.layers(mask_features)
        loss = mask_rcnn_loss(logits, fg_proposals, self.mask_head.vis_period)
        return {"loss_mask": loss * self.mask_head.loss_weight}, logits

    def _motion_losses(self, box_features, features, fg_proposals: List[Instances], mask_logits,
                       flow_targets: Optional[FlowSupervision]) -> Dict[str, torch.Tensor]:
        """Motion and/or RoI flow losses of the foreground RoIs (their GT class's motion);
        box_features: the box head's features of those RoIs."""
        classes = cat([p.gt_classes for p in fg_proposals])
        pred = self.motion_head(self._motion_input(
            box_features, features, [p.proposal_boxes for p in fg_proposals]), classes)
        losses = {}
        if self.motion_supervision in ("motion", "both"):
            losses.update(self.motion_head.losses(pred, *_gt_motions(fg_proposals, pred)))
        if self.uses_flow_supervision:
            if flow_targets is None:
                raise ValueError("MODEL.MOTION_RCNN.SUPERVISION uses flow: the RoI heads need "
                                 "flow_targets (depth, intrinsics, flow, flow_valid) in training")
            boxes = cat([p.proposal_boxes.tensor for p in fg_proposals])
            batch_index = cat([torch.full((len(p),), i, dtype=torch.int64, device=boxes.device)
                               for i, p in enumerate(fg_proposals)])
            rows = torch.arange(classes.shape[0], device=classes.device)
            class_logits = (mask_logits[rows, classes] if mask_logits.shape[1] > 1
                            else mask_logits[:, 0])
            moving = pred["moving_logits"].softmax(dim=1)[:, 1]
            losses["loss_flow_roi"] = self.flow_loss_weight * roi_flow_loss(
                boxes, batch_index, class_logits.sigmoid(), moving, pred["rotations"],
                pred["translations"], pred["pivots"], flow_targets, self.flow_grid_size)
        return losses

    def _predict_motion(self, box_features, features, instances: List[Instances]):
        """Write pred_rotations (N,3,3), pred_translations (N,3), pred_pivots (N,3) and
        pred_moving_scores (N,) of each detection's predicted class into `instances`."""
        pred = self.motion_head(
            self._motion_input(box_features, features, [x.pred_boxes for x in instances]),
            cat([x.pred_classes for x in instances]))
        moving = pred["moving_logits"].softmax(dim=1)[:, 1]
        sizes = [len(x) for x in instances]
        fields = zip(pred["rotations"].split(sizes), pred["translations"].split(sizes),
                     pred["pivots"].split(sizes), moving.split(sizes))
        for inst, (rotations, translations, pivots, moving_scores) in zip(instances, fields):
            inst.pred_rotations = rotations
            inst.pred_translations = translations
            inst.pred_pivots = pivots
            inst.pred_moving_scores = moving_scores
        return instances


def _gt_motions(fg_proposals, pred):
    """GT rotations (N,3,3), translations (N,3), pivots (N,3) and moving (N,) of the foreground
    RoIs (empty tensors when there is none)."""
    present = [p for p in fg_proposals if len(p)]
    for p in present:
        missing = [name for name in _GT_MOTION_FIELDS if not p.has(name)]
        if missing:
            raise ValueError(
                f"MODEL.MOTION_RCNN.SUPERVISION 'motion'/'both' needs 3D motion ground truth, "
                f"but the training instances lack {missing}: use a data set with motion GT or "
                "set MODEL.MOTION_RCNN.SUPERVISION 'flow'"
            )
    if not present:
        like = pred["translations"]
        return (like.new_zeros(0, 3, 3), like.new_zeros(0, 3), like.new_zeros(0, 3),
                torch.zeros(0, dtype=torch.bool, device=like.device))
    return tuple(cat([p.get(name) for p in present]) for name in _GT_MOTION_FIELDS)


@ROI_HEADS_REGISTRY.register()
class MotionROIHeads(MotionHeadMixin, StandardROIHeads):
    """StandardROIHeads (FPN) + RoI motion head on the box head's FC features; constructor
    arguments: MotionHeadMixin's."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        mixin = cls._init_mixin(cfg, ret["box_head"].output_shape)
        if "motion_head" in mixin and ret["train_on_pred_boxes"]:
            raise ValueError("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES is not supported with the "
                             "motion head: set it False (or MODEL.MOTION_RCNN.MOTION_ON False)")
        ret.update(mixin)
        return ret

    def _box_features(self, features, boxes):
        return self.box_head(self.box_pooler([features[f] for f in self.box_in_features], boxes))

    def _forward_box(self, features, proposals):
        """As StandardROIHeads._forward_box; at inference with the motion head reading "box",
        each detection also keeps the box head's features of the proposal it came from
        (field `_PROPOSAL_FEATURES`): the motion head reads them, as in training, instead of
        pooling and running the box head again on the detection boxes."""
        if self.training or not (self.motion_on and "box" in self.motion_in_features):
            return super()._forward_box(features, proposals)
        box_features = self._box_features(features, [x.proposal_boxes for x in proposals])
        predictions = self.box_predictor(box_features)
        # fast_rcnn_inference drops non-finite rows before it indexes: then the indices of
        # the kept proposals are not those of `proposals`, and the motion head pools again
        finite = all(torch.isfinite(p).all() for p in predictions)
        instances, kept = self.box_predictor.inference(predictions, proposals)
        if finite:
            start = 0
            for inst, proposals_i, index in zip(instances, proposals, kept):
                inst.set(_PROPOSAL_FEATURES, box_features.index_select(0, index + start))
                start += len(proposals_i)
        return instances

    def forward(self, images: ImageList, features: Dict[str, torch.Tensor],
                proposals: List[Instances], targets: Optional[List[Instances]] = None,
                flow_targets: Optional[FlowSupervision] = None):
        """As StandardROIHeads.forward; in training with the motion head also the motion losses
        (`flow_targets` is needed for flow supervision)."""
        # Training spells out the parent's steps (each one its own call): _forward_box and
        # _forward_mask keep the box features and the mask logits to themselves, and the motion
        # head needs both (IN_FEATURES "box", flow supervision).
        if not (self.training and self.motion_on):
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("MotionROIHeads needs 'targets' (GT instances) in training")
        proposals = self.label_and_sample_proposals(proposals, targets)
        box_features = self._box_features(features, [x.proposal_boxes for x in proposals])
        losses = self.box_predictor.losses(self.box_predictor(box_features), proposals)
        fg_proposals, fg_selection = select_foreground_proposals(proposals, self.num_classes)
        mask_logits = None
        if self.mask_on:
            mask_losses, mask_logits = self._mask_losses_and_logits(
                self._mask_features(features, fg_proposals), fg_proposals)
            losses.update(mask_losses)
        losses.update(self._forward_keypoint(features, proposals))
        losses.update(self._motion_losses(box_features[torch.cat(fg_selection)], features,
                                          fg_proposals, mask_logits, flow_targets))
        return proposals, losses

    def _mask_features(self, features, instances, boxes="proposal_boxes"):
        """Input of the mask head for the `boxes` field of `instances` (as StandardROIHeads
        uses it): the foreground proposals in training, the detections at inference."""
        if self.mask_pooler is None:
            return {f: features[f] for f in self.mask_in_features}
        return self.mask_pooler([features[f] for f in self.mask_in_features],
                                [x.get(boxes) for x in instances])

    def _forward_mask(self, features, instances):
        """As StandardROIHeads._forward_mask, the mask head chunked at inference."""
        if self.training or not self.mask_on:
            return super()._forward_mask(features, instances)
        return self._mask_inference(self._mask_features(features, instances, "pred_boxes"),
                                    instances)

    def forward_with_given_boxes(self, features, instances):
        """Masks (and keypoints) as StandardROIHeads, then motions of the given boxes."""
        instances = super().forward_with_given_boxes(features, instances)
        if not self.motion_on:
            return instances
        box_features = None
        if "box" in self.motion_in_features:
            if all(x.has(_PROPOSAL_FEATURES) for x in instances):
                box_features = cat([x.get(_PROPOSAL_FEATURES) for x in instances])
            else:  # given boxes (or non-finite predictions): the box head on them
                box_features = self._box_features(features, [x.pred_boxes for x in instances])
        for x in instances:
            if x.has(_PROPOSAL_FEATURES):
                x.remove(_PROPOSAL_FEATURES)
        return self._predict_motion(box_features, features, instances)


@ROI_HEADS_REGISTRY.register()
class MotionRes5ROIHeads(MotionHeadMixin, Res5ROIHeads):
    """Res5ROIHeads (C4) + RoI motion head on the averaged res5 RoI features; constructor
    arguments: MotionHeadMixin's."""

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_mixin(cfg, ShapeSpec(channels=ret["res5"][-1].out_channels)))
        return ret

    def forward(self, images: ImageList, features: Dict[str, torch.Tensor],
                proposals: List[Instances], targets: Optional[List[Instances]] = None,
                flow_targets: Optional[FlowSupervision] = None):
        """As Res5ROIHeads.forward; in training with the motion head also the motion losses."""
        # Training spelled out for the same reason as MotionROIHeads.forward: the shared res5
        # features of the foreground RoIs feed the mask head and the motion head.
        if not (self.training and self.motion_on):
            return super().forward(images, features, proposals, targets)
        if not targets:
            raise ValueError("MotionRes5ROIHeads needs 'targets' (GT instances) in training")
        proposals = self.label_and_sample_proposals(proposals, targets)
        box_features = self._shared_roi_transform([features[f] for f in self.in_features],
                                                  [x.proposal_boxes for x in proposals])
        losses = self.box_predictor.losses(self.box_predictor(box_features.mean(dim=[2, 3])),
                                           proposals)
        fg_proposals, fg_selection = select_foreground_proposals(proposals, self.num_classes)
        fg_features = box_features[torch.cat(fg_selection)]
        mask_losses, mask_logits = self._mask_losses_and_logits(fg_features, fg_proposals)
        losses.update(mask_losses)
        losses.update(self._motion_losses(fg_features.mean(dim=[2, 3]), features, fg_proposals,
                                          mask_logits, flow_targets))
        return [], losses

    def forward_with_given_boxes(self, features, instances):
        """Masks (the mask head chunked) and motions from one res5 pass over the given boxes."""
        if not (self.mask_on or self.motion_on):
            return instances
        x = self._shared_roi_transform([features[f] for f in self.in_features],
                                       [i.pred_boxes for i in instances])
        if self.mask_on:
            instances = self._mask_inference(x, instances)
        if not self.motion_on:
            return instances
        return self._predict_motion(x.mean(dim=[2, 3]), features, instances)
