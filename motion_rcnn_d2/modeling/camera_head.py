"""The camera motion head (METHOD.md section 3): the camera's ego-motion from C6.

C6 (stride 64) -> 1x1 conv CONV_DIM (+ NORM) + ReLU -> resized to POOL_SIZE x POOL_SIZE
(adaptive average pooling; it also enlarges maps smaller than that) -> flatten -> NUM_FC x
(FC FC_DIM + ReLU, optional dropout) -> linear output: rotation parameters (3 Euler sines or
4 raw quaternion values), translation t_cam (3) and, with MOVING_ON, moving/still logits o_cam
(2). Rotation and translation outputs are multiplied by their config scales (zero output =
identity motion); the output layer starts with a small std. With NORM "" the 1x1 conv + ReLU can
die as a whole (every output negative for every input: the head then predicts one constant
motion and gets no gradient to recover); a normalisation (e.g. "GN") keeps about half of its
outputs active.

Loss (METHOD.md section 6): L_cam = (l_R + l_t) o*_cam + l_ocam, terms as in
roi_heads/motion_losses.py, averaged over the images of the batch. Without MOVING_ON there is no
l_ocam and o*_cam is taken as 1 (the motion is always supervised, since it is never gated).
"""
import fvcore.nn.weight_init as weight_init
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from .roi_heads.motion_losses import (
    ROTATION_PARAM_DIMS,
    check_rotation_param,
    rigid_motion_terms,
    rotation_from_params,
)

__all__ = ["CAMERA_MOTION_HEAD_REGISTRY", "CameraMotionHead", "build_camera_motion_head"]

CAMERA_MOTION_HEAD_REGISTRY = Registry("CAMERA_MOTION_HEAD")
CAMERA_MOTION_HEAD_REGISTRY.__doc__ = """
Registry for camera motion heads: a backbone feature map -> the camera motion of each image.
Called with (cfg, input_shape: ShapeSpec of cfg.MODEL.CAMERA_MOTION_HEAD.IN_FEATURE).
"""


@CAMERA_MOTION_HEAD_REGISTRY.register()
class CameraMotionHead(nn.Module):
    """Conv + FC head predicting the camera motion of each image from one feature map."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, conv_dim: int = 512, norm: str = "",
                 pool_size: int = 7, num_fc: int = 2, fc_dim: int = 1024, dropout: float = 0.0,
                 moving_on: bool = True, rotation_param: str = "euler_sines",
                 output_init_std: float = 1e-3, rotation_scale: float = 0.01,
                 translation_scale: float = 1.0, loss_weights=None):
        """
        Args:
            input_shape: the input feature map (channels used).
            conv_dim: channels of the 1x1 conv; norm: its normalisation (Detectron2's
                `get_norm` names: "", "GN", "BN", ...); pool_size: side of the resized map.
            num_fc, fc_dim, dropout: hidden FC layers, their width and dropout probability.
            moving_on: also predict moving/still logits.
            rotation_param: "euler_sines" or "quaternion".
            output_init_std: std of the normal init of the output layer.
            rotation_scale, translation_scale: output multipliers (unitless, metres), also the
                loss normalisation.
            loss_weights: {"rot", "trans", "moving"} -> weight (default 1 each).
        """
        super().__init__()
        check_rotation_param(rotation_param, "MODEL.CAMERA_MOTION_HEAD.ROTATION_PARAM")
        self.moving_on = moving_on
        self.rotation_param = rotation_param
        self.rotation_scale = rotation_scale
        self.translation_scale = translation_scale
        self.loss_weights = {"rot": 1.0, "trans": 1.0, "moving": 1.0}
        self.loss_weights.update(loss_weights or {})

        if norm == "GN" and conv_dim % 32:
            raise ValueError(f"MODEL.CAMERA_MOTION_HEAD.CONV_DIM = {conv_dim} with NORM 'GN': "
                             "GroupNorm uses 32 groups, so use a multiple of 32")
        self.conv = Conv2d(input_shape.channels, conv_dim, kernel_size=1, bias=not norm,
                           norm=get_norm(norm, conv_dim))
        weight_init.c2_msra_fill(self.conv)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        layers, in_dim = [], conv_dim * pool_size * pool_size
        for _ in range(num_fc):
            fc = nn.Linear(in_dim, fc_dim)
            weight_init.c2_xavier_fill(fc)
            layers += [fc, nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            in_dim = fc_dim
        self.fcs = nn.Sequential(*layers)
        self._dims = (ROTATION_PARAM_DIMS[rotation_param], 3) + ((2,) if moving_on else ())
        self.predictor = nn.Linear(in_dim, sum(self._dims))
        nn.init.normal_(self.predictor.weight, std=output_init_std)
        nn.init.constant_(self.predictor.bias, 0.0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.CAMERA_MOTION_HEAD
        return {
            "input_shape": input_shape,
            "conv_dim": head.CONV_DIM,
            "norm": head.NORM,
            "pool_size": head.POOL_SIZE,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "dropout": head.DROPOUT,
            "moving_on": head.MOVING_ON,
            "rotation_param": head.ROTATION_PARAM,
            "output_init_std": head.OUTPUT_INIT_STD,
            "rotation_scale": head.ROTATION_SCALE,
            "translation_scale": head.TRANSLATION_SCALE,
            "loss_weights": {
                "rot": head.ROTATION_LOSS_WEIGHT,
                "trans": head.TRANSLATION_LOSS_WEIGHT,
                "moving": head.MOVING_LOSS_WEIGHT,
            },
        }

    def forward(self, x):
        """
        Args:
            x: (B, C, h, w) feature map.
        Returns:
            dict: "rotation_params" (B, 3 or 4) (scaled), "rotations" (B, 3, 3),
            "translations" (B, 3) metres, "moving_logits" (B, 2) (index 1 = moving) or None,
            "moving_probs" (B,) (ones without MOVING_ON).
        """
        x = self.pool(F.relu(self.conv(x)))
        out = self.predictor(self.fcs(x.flatten(start_dim=1)))
        parts = out.split(self._dims, dim=1)
        rotation = parts[0] * self.rotation_scale
        moving_logits = parts[2] if self.moving_on else None
        moving_probs = (moving_logits.softmax(dim=1)[:, 1] if self.moving_on
                        else out.new_ones(out.shape[0]))
        return {
            "rotation_params": rotation,
            "rotations": rotation_from_params(rotation, self.rotation_param),
            "translations": parts[1] * self.translation_scale,
            "moving_logits": moving_logits,
            "moving_probs": moving_probs,
        }

    def losses(self, predictions, gt_rotations, gt_translations, gt_moving):
        """L_cam = (l_R + l_t) o*_cam + l_ocam, averaged over the batch, weighted by config.

        Args:
            predictions: output of `forward`.
            gt_rotations: (B, 3, 3); gt_translations: (B, 3) metres; gt_moving: (B,) bool.
        Returns:
            {"loss_cam_rot", "loss_cam_trans"} and, with MOVING_ON, "loss_cam_moving".
        """
        num = max(gt_rotations.shape[0], 1)
        loss_rot, loss_trans = rigid_motion_terms(
            predictions["rotations"], gt_rotations, predictions["translations"], gt_translations,
            self.rotation_scale, self.translation_scale)
        w = self.loss_weights
        if not self.moving_on:
            return {"loss_cam_rot": w["rot"] * loss_rot.sum() / num,
                    "loss_cam_trans": w["trans"] * loss_trans.sum() / num}
        moving = gt_moving.to(loss_rot.dtype)
        loss_moving = F.cross_entropy(predictions["moving_logits"], gt_moving.long(),
                                      reduction="sum")
        return {
            "loss_cam_rot": w["rot"] * (loss_rot * moving).sum() / num,
            "loss_cam_trans": w["trans"] * (loss_trans * moving).sum() / num,
            "loss_cam_moving": w["moving"] * loss_moving / num,
        }


def build_camera_motion_head(cfg, input_shape):
    """Build the camera head named by cfg.MODEL.CAMERA_MOTION_HEAD.NAME."""
    return CAMERA_MOTION_HEAD_REGISTRY.get(cfg.MODEL.CAMERA_MOTION_HEAD.NAME)(cfg, input_shape)
