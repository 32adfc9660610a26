"""The RoI motion head (docs/method.md section 3): per detection, a rigid 3D motion.

Input: a per-RoI vector (motion_roi_heads.py, MODEL.ROI_MOTION_HEAD.IN_FEATURES): the box head's
feature (FPN: the output of its 2 FC layers on the pooled 7x7x256; C4: the res5 feature averaged
over its 7x7 grid, the thesis), and/or the RoI's pooled XYZ_t and XYZ change and the camera
head's translation; optionally standardised (`RunningStandardize`). Then NUM_FC x (FC FC_DIM +
ReLU) and a linear output layer giving, per class (or once, class-agnostic): rotation
parameters (3 Euler sines or 4 raw quaternion values), translation t_k (3), pivot p_k (3) and
moving/still logits o_k (2). Rotation, translation and pivot outputs are multiplied by their
config scales, so the network works in normalised units and a zero output is the identity
motion with pivot 0.
"""
from typing import Dict

import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn

from ..layers import RunningStandardize, motion_fc_layers
from ..motion import ROTATION_PARAM_DIMS, check_rotation_param, rotation_from_params
from ..motion_losses import pivot_term, rigid_motion_terms

__all__ = ["ROI_MOTION_HEAD_REGISTRY", "FCMotionHead", "build_motion_head"]

ROI_MOTION_HEAD_REGISTRY = Registry("ROI_MOTION_HEAD")
ROI_MOTION_HEAD_REGISTRY.__doc__ = """
Registry for RoI motion heads: per-RoI features -> rigid motions. Called with
(cfg, input_shape: ShapeSpec of the per-RoI feature); selected by cfg.MODEL.ROI_MOTION_HEAD.NAME.
"""


@ROI_MOTION_HEAD_REGISTRY.register()
class FCMotionHead(nn.Module):
    """Fully connected motion head; `forward(x, classes)` returns the motion of each RoI's class."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_classes: int, num_fc: int = 2,
                 fc_dim: int = 1024, cls_agnostic: bool = False,
                 rotation_param: str = "euler_sines", output_init_std: float = 1e-3,
                 rotation_scale: float = 0.01, translation_scale: float = 0.5,
                 pivot_scale: float = 10.0, loss_weights: Dict[str, float] = None,
                 standardize_input: bool = False):
        """
        Args:
            input_shape: shape of the per-RoI feature (flattened: channels x height x width).
            num_classes: foreground classes (ROI_HEADS.NUM_CLASSES).
            num_fc, fc_dim: hidden FC layers and their width.
            cls_agnostic: one motion for every class.
            rotation_param: "euler_sines" or "quaternion".
            output_init_std: std of the normal init of the output layer
                (small: docs/method.md section 3).
            rotation_scale, translation_scale, pivot_scale: output multipliers (unitless, m, m);
                also the loss normalisation.
            loss_weights: {"rot", "trans", "pivot", "moving"} -> weight (default 1 each).
            standardize_input: standardise the input vector (`RunningStandardize`).
        """
        super().__init__()
        check_rotation_param(rotation_param, "MODEL.ROI_MOTION_HEAD.ROTATION_PARAM")
        self.num_classes = num_classes
        self.cls_agnostic = cls_agnostic
        self.rotation_param = rotation_param
        self.rotation_scale = rotation_scale
        self.translation_scale = translation_scale
        self.pivot_scale = pivot_scale
        self.loss_weights = {"rot": 1.0, "trans": 1.0, "pivot": 1.0, "moving": 1.0}
        self.loss_weights.update(loss_weights or {})

        in_dim = input_shape.channels * (input_shape.height or 1) * (input_shape.width or 1)
        self.standardize = RunningStandardize(in_dim) if standardize_input else nn.Identity()
        self._dims = (ROTATION_PARAM_DIMS[rotation_param], 3, 3, 2)  # rotation, t, p, moving
        self._num_outputs = 1 if cls_agnostic else num_classes
        self.fcs, self.predictor = motion_fc_layers(
            in_dim, num_fc, fc_dim, self._num_outputs * sum(self._dims), output_init_std)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.ROI_MOTION_HEAD
        return {
            "input_shape": input_shape,
            "num_classes": cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "cls_agnostic": head.CLS_AGNOSTIC,
            "rotation_param": head.ROTATION_PARAM,
            "output_init_std": head.OUTPUT_INIT_STD,
            "rotation_scale": head.ROTATION_SCALE,
            "translation_scale": head.TRANSLATION_SCALE,
            "pivot_scale": head.PIVOT_SCALE,
            "standardize_input": head.STANDARDIZE_INPUT,
            "loss_weights": {
                "rot": head.ROTATION_LOSS_WEIGHT,
                "trans": head.TRANSLATION_LOSS_WEIGHT,
                "pivot": head.PIVOT_LOSS_WEIGHT,
                "moving": head.MOVING_LOSS_WEIGHT,
            },
        }

    def forward(self, x, classes):
        """
        Args:
            x: (R, ...) per-RoI features.
            classes: (R,) int64 class of each RoI (GT class in training, predicted at
                inference); ignored when class-agnostic.
        Returns:
            dict of the selected class's prediction: "rotation_params" (R, 3 or 4) (scaled),
            "rotations" (R, 3, 3), "translations" (R, 3) m, "pivots" (R, 3) m,
            "moving_logits" (R, 2) (index 1 = moving).
        """
        out = self.predictor(self.fcs(self.standardize(x.flatten(start_dim=1))))
        out = out.reshape(out.shape[0], self._num_outputs, sum(self._dims))
        if not self.cls_agnostic:
            out = out[torch.arange(out.shape[0], device=out.device), classes]
        else:
            out = out[:, 0]
        rotation, translation, pivot, moving = out.split(self._dims, dim=1)
        rotation = rotation * self.rotation_scale
        return {
            "rotation_params": rotation,
            "rotations": rotation_from_params(rotation, self.rotation_param),
            "translations": translation * self.translation_scale,
            "pivots": pivot * self.pivot_scale,
            "moving_logits": moving,
        }

    def losses(self, predictions, gt_rotations, gt_translations, gt_pivots, gt_moving):
        """Motion supervision (docs/method.md section 6), each term weighted by its config weight:

            L_motion = 1/N_fg sum_k [(l_R + l_t) o*_k + l_p + l_o]   (terms in motion_losses.py)

        Args:
            predictions: output of `forward` for the N_fg foreground RoIs.
            gt_rotations: (N_fg, 3, 3); gt_translations, gt_pivots: (N_fg, 3) m;
            gt_moving: (N_fg,) bool o*_k.
        Returns:
            {"loss_motion_rot", "loss_motion_trans", "loss_motion_pivot", "loss_motion_moving"};
            zeros with gradients to the head when N_fg = 0.
        """
        num = max(gt_moving.shape[0], 1)
        moving = gt_moving.to(predictions["translations"].dtype)
        loss_rot, loss_trans = rigid_motion_terms(
            predictions["rotations"], gt_rotations, predictions["translations"], gt_translations,
            self.rotation_scale, self.translation_scale)
        loss_pivot = pivot_term(predictions["pivots"], gt_pivots, self.pivot_scale)
        loss_moving = F.cross_entropy(predictions["moving_logits"], gt_moving.long(),
                                      reduction="sum")
        w = self.loss_weights
        return {
            "loss_motion_rot": w["rot"] * (loss_rot * moving).sum() / num,
            "loss_motion_trans": w["trans"] * (loss_trans * moving).sum() / num,
            "loss_motion_pivot": w["pivot"] * loss_pivot.sum() / num,
            "loss_motion_moving": w["moving"] * loss_moving / num,
        }


def build_motion_head(cfg, input_shape):
    """Build the RoI motion head named by cfg.MODEL.ROI_MOTION_HEAD.NAME."""
    return ROI_MOTION_HEAD_REGISTRY.get(cfg.MODEL.ROI_MOTION_HEAD.NAME)(cfg, input_shape)
