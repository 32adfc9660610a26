"""The camera motion heads (docs/method.md section 3): the camera's ego-motion of each pair.

`CameraMotionHead` reads one feature map (the thesis: C6, stride 64):
C -> 1x1 conv CONV_DIM (+ NORM) + ReLU -> resized to POOL_SIZE x POOL_SIZE (adaptive average
pooling; it also enlarges maps smaller than that) -> flatten -> with STANDARDIZE_INPUT, each
feature standardised by running statistics (modeling/layers.py) -> NUM_FC x (FC FC_DIM + ReLU,
optional dropout) -> linear output: rotation parameters (3 Euler sines or 4 raw quaternion
values), translation (3) and, with MOVING_ON, moving/still logits o_cam (2). Outputs are
de-normalised by dataset statistics:

    rotation params = ROTATION_SCALE * r,   t_cam = TRANSLATION_MEAN + TRANSLATION_SCALE * t  (m)

so a zero output is the identity rotation and the mean translation; the output layer starts
with a small std. `CorrelationCameraHead` (the default) puts a cost volume of the two frames in
front of those layers.

Why (measured on the synthetic world; docs/method.md section 3 has the figures): the thesis's
head (NORM "", no standardisation) on C6 predicted one camera motion for every pair. The pooled
C6 features are nearly the same for every image, so each FC ReLU unit was on for all images or
for none, and at the full LR the first FC layer's units died (99 % after 200 iterations);
standardised inputs and MODEL.CAMERA_MOTION_HEAD.LR_FACTOR keep them alive. Even then C6 of the
trained main job held no ego-motion that carried over to unseen sequences, hence the
correlation head.

Loss (docs/method.md section 6): L_cam = (l_R + l_t) o*_cam + l_ocam, terms as in
modeling/motion_losses.py (differences divided by the scales), averaged over the images of the
batch. Without MOVING_ON there is no l_ocam and o*_cam is taken as 1 (the motion is always
supervised, since it is never gated).
"""
import fvcore.nn.weight_init as weight_init
import torch
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry
from torch import nn

from ..geometry import sweep_forward_motion
from .layers import RunningStandardize, motion_fc_layers, xyz_and_change
from .motion import ROTATION_PARAM_DIMS, check_rotation_param, rotation_from_params
from .motion_losses import rigid_motion_terms

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
                 pool_size: int = 7, standardize_input: bool = True, num_fc: int = 2,
                 fc_dim: int = 1024, dropout: float = 0.0,
                 moving_on: bool = True, rotation_param: str = "euler_sines",
                 output_init_std: float = 1e-3, rotation_scale: float = 0.01,
                 translation_scale: float = 1.0, translation_mean=(0.0, 0.0, 0.0),
                 loss_weights=None, extra_dim: int = 0):
        """
        Args:
            input_shape: the input feature map (channels used).
            conv_dim: channels of the 1x1 conv; norm: its normalisation (Detectron2's
                `get_norm` names: "", "GN", "BN", ...); pool_size: side of the resized map.
            standardize_input: standardise the flattened features with running statistics.
            num_fc, fc_dim, dropout: hidden FC layers, their width and dropout probability.
            moving_on: also predict moving/still logits.
            rotation_param: "euler_sines" or "quaternion".
            output_init_std: std of the normal init of the output layer.
            rotation_scale, translation_scale: output multipliers (unitless, metres), also the
                loss normalisation.
            translation_mean: (3,) metres added to the translation output (dataset mean).
            loss_weights: {"rot", "trans", "moving"} -> weight (default 1 each).
            extra_dim: length of a vector a subclass appends to the flattened features
                (`_raw`'s `extra`).
        """
        super().__init__()
        check_rotation_param(rotation_param, "MODEL.CAMERA_MOTION_HEAD.ROTATION_PARAM")
        self.moving_on = moving_on
        self.rotation_param = rotation_param
        self.rotation_scale = rotation_scale
        self.translation_scale = translation_scale
        if len(translation_mean) != 3:
            raise ValueError("MODEL.CAMERA_MOTION_HEAD.TRANSLATION_MEAN must be 3 numbers (metres), "
                             f"got {list(translation_mean)}")
        self.register_buffer("translation_mean",
                             torch.tensor([float(v) for v in translation_mean]), persistent=False)
        self.loss_weights = {"rot": 1.0, "trans": 1.0, "moving": 1.0}
        self.loss_weights.update(loss_weights or {})

        if norm == "GN" and conv_dim % 32:
            raise ValueError(f"MODEL.CAMERA_MOTION_HEAD.CONV_DIM = {conv_dim} with NORM 'GN': "
                             "GroupNorm uses 32 groups, so use a multiple of 32")
        self.conv = Conv2d(input_shape.channels, conv_dim, kernel_size=1, bias=not norm,
                           norm=get_norm(norm, conv_dim))
        weight_init.c2_msra_fill(self.conv)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        in_dim = conv_dim * pool_size * pool_size + extra_dim
        self.standardize = RunningStandardize(in_dim) if standardize_input else nn.Identity()
        self._dims = (ROTATION_PARAM_DIMS[rotation_param], 3) + ((2,) if moving_on else ())
        self.fcs, self.predictor = motion_fc_layers(in_dim, num_fc, fc_dim, sum(self._dims),
                                                    output_init_std, dropout)

    @classmethod
    def from_config(cls, cfg, input_shape):
        head = cfg.MODEL.CAMERA_MOTION_HEAD
        return {
            "input_shape": input_shape,
            "conv_dim": head.CONV_DIM,
            "norm": head.NORM,
            "pool_size": head.POOL_SIZE,
            "standardize_input": head.STANDARDIZE_INPUT,
            "num_fc": head.NUM_FC,
            "fc_dim": head.FC_DIM,
            "dropout": head.DROPOUT,
            "moving_on": head.MOVING_ON,
            "rotation_param": head.ROTATION_PARAM,
            "output_init_std": head.OUTPUT_INIT_STD,
            "rotation_scale": head.ROTATION_SCALE,
            "translation_scale": head.TRANSLATION_SCALE,
            "translation_mean": tuple(head.TRANSLATION_MEAN),
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
        return self._decode(self._raw(x))

    def _raw(self, x, extra=None):
        """The output layer's raw values (B, D) for the feature map x (and the vectors
        `extra` (B, extra_dim) appended to its flattened features)."""
        x = self.pool(F.relu(self.conv(x))).flatten(start_dim=1)
        if extra is not None:
            x = torch.cat([x, extra], dim=1)
        return self.predictor(self.fcs(self.standardize(x)))

    def _decode(self, out, rotation_base=None, translation_base=None):
        """The outputs of `forward` from the raw output layer `out` (B, D): rotation params =
        rotation_base + ROTATION_SCALE * r and t_cam = translation_base + TRANSLATION_SCALE * t,
        the bases defaulting to 0 and TRANSLATION_MEAN."""
        parts = out.split(self._dims, dim=1)
        rotation = parts[0] * self.rotation_scale
        if rotation_base is not None:
            rotation = rotation + rotation_base
        if translation_base is None:
            translation_base = self.translation_mean
        moving_logits = parts[2] if self.moving_on else None
        moving_probs = (moving_logits.softmax(dim=1)[:, 1] if self.moving_on
                        else out.new_ones(out.shape[0]))
        return {
            "rotation_params": rotation,
            "rotations": rotation_from_params(rotation, self.rotation_param),
            "translations": translation_base + parts[1] * self.translation_scale,
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


def correlation(features_t, features_t1, radius):
    """Cost volume of two feature maps (FlowNetC's correlation, stride 1, patch 1):

        C[k](x) = mean_c f_t(x)_c * f_t+1(x + d_k)_c,   d_k in {-r..r}^2 (row-major, dy first),

    zero where x + d_k falls outside the map. (B, C, h, w) x 2 -> (B, (2r+1)^2, h, w).
    """
    height = features_t.shape[2]
    size = 2 * radius + 1
    padded = F.pad(features_t1, (radius,) * 4)
    rows = []  # per vertical displacement, all horizontal ones at once (a view, no copy)
    for dy in range(size):
        windows = padded[:, :, dy:dy + height].unfold(3, size, 1)  # (B, C, h, w, size)
        rows.append((features_t[..., None] * windows).mean(dim=1))  # (B, h, w, size)
    return torch.stack(rows, dim=1).permute(0, 1, 4, 2, 3).flatten(1, 2)


@CAMERA_MOTION_HEAD_REGISTRY.register()
class CorrelationCameraHead(CameraMotionHead):
    """Camera motion from a correlation of the two frames (IN_FEATURE "input": the network input).

    Each frame goes through the same small encoder (3 convs of 16, 32, 32 channels, stride 8,
    leaky ReLU 0.1); their correlation over displacements up to CORRELATION_RADIUS cells
    (+-24 px at radius 3) and, with the 12-channel input, XYZ_t and 10 (XYZ_t+1 - XYZ_t)
    average-pooled to stride 8 are encoded by two stride-2 convs (stride 32), and
    `CameraMotionHead`'s layers (1x1 conv, pooling, standardisation, FCs, outputs, losses) turn
    that map into the camera motion.

    Why: the image motion of the static scene and its depth determine the camera motion; the
    cost volume states the image motion, and the change of XYZ at a pixel is, on a static
    surface facing the camera, the camera's translation itself. The C6 features of the shared
    backbone, trained mostly by the detection losses, held no ego-motion that carried over to
    unseen sequences in a CPU-sized schedule (docs/method.md section 3).
    """

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, correlation_radius: int = 3, **kwargs):
        if input_shape.channels < 6 or input_shape.stride != 1:
            raise ValueError("CorrelationCameraHead reads the two frames of the network input: "
                             "set MODEL.CAMERA_MOTION_HEAD.IN_FEATURE 'input'")
        encoded = 128
        super().__init__(ShapeSpec(channels=encoded), **kwargs)
        self.radius = correlation_radius
        self.with_xyz = input_shape.channels >= 12

        def conv(cin, cout, kernel):
            layer = nn.Conv2d(cin, cout, kernel, stride=2, padding=kernel // 2)
            nn.init.kaiming_normal_(layer.weight, a=0.1, nonlinearity="leaky_relu")
            nn.init.zeros_(layer.bias)
            return [layer, nn.LeakyReLU(0.1, inplace=True)]

        self.frame_encoder = nn.Sequential(*conv(3, 16, 5), *conv(16, 32, 3), *conv(32, 32, 3))
        cost = (2 * correlation_radius + 1) ** 2 + (6 if self.with_xyz else 0)
        self.cost_encoder = nn.Sequential(*conv(cost, encoded, 3), *conv(encoded, encoded, 3))

    @classmethod
    def from_config(cls, cfg, input_shape):
        args = super().from_config(cfg, input_shape)
        args["correlation_radius"] = cfg.MODEL.CAMERA_MOTION_HEAD.CORRELATION_RADIUS
        return args

    def forward(self, x):
        """x: (B, 6 or 12, H, W) the normalised network input -> as `CameraMotionHead`."""
        return self._decode(self._raw(self._encode(x)))

    def _encode(self, x):
        """The encoded cost volume (+ XYZ) (B, 128, H/32, W/32) of the network input x."""
        features_t, features_t1 = self.frame_encoder(
            torch.cat([x[:, 0:3], x[:, 3:6]])).chunk(2)  # both frames in one pass
        cost = [correlation(features_t, features_t1, self.radius)]
        if self.with_xyz:
            cost.append(F.adaptive_avg_pool2d(xyz_and_change(x), features_t.shape[-2:]))
        return self.cost_encoder(torch.cat(cost, dim=1))


@CAMERA_MOTION_HEAD_REGISTRY.register()
class SweepCameraHead(CorrelationCameraHead):
    """`CorrelationCameraHead` whose outputs are corrections to an ego-motion sweep
    (geometry/sweep.py): the forward translation t_z and yaw theta whose warp of frame t+1 by
    frame t's depth best matches frame t. With the sweep's estimate as base,

        rotation sines = (0, sin theta, 0) + ROTATION_SCALE * r,
        t_cam = (TRANSLATION_MEAN_x, TRANSLATION_MEAN_y, t_z) + TRANSLATION_SCALE * t.

    Why: the correlation head regressed the forward speed of unseen sequences toward the
    training mean (docs/method.md section 3); the sweep measures it from geometry, which
    carries over to any scene. Needs the 12-channel input (XYZ_t, in units of
    MODEL.MOTION_RCNN.XYZ_SCALE) and the intrinsics of the input; Euler-sine rotations.
    Config: SWEEP_FORWARD (min, max, count) metres, SWEEP_YAW (min, max, count) radians,
    SWEEP_STRIDE (pixels between the points of frame t used), SWEEP_CLAMP (truncation of the
    absolute difference of the normalised frames' mean channel), SWEEP_DEPTH_CLAMP (metres:
    truncation of the depth term against XYZ_t+1; 0 = photometric only).
    """

    needs_intrinsics = True

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, sweep_forward=(-1.6, -0.2, 8),
                 sweep_yaw=(-0.015, 0.015, 5), sweep_stride: int = 4, sweep_clamp: float = 0.5,
                 sweep_depth_clamp: float = 0.3, xyz_scale: float = 1.0, **kwargs):
        for key, value in (("SWEEP_FORWARD", sweep_forward), ("SWEEP_YAW", sweep_yaw)):
            if len(value) != 3 or int(value[2]) != value[2] or value[2] < 1 or value[0] > value[1]:
                raise ValueError(f"MODEL.CAMERA_MOTION_HEAD.{key} = {list(value)}: give "
                                 "(min, max, count) with min <= max and an integer count >= 1")
        # the FC layers also read the sweep's estimate (2) and its first grid's costs
        super().__init__(input_shape, extra_dim=2 + int(sweep_forward[2]) * int(sweep_yaw[2]),
                         **kwargs)
        if not self.with_xyz:
            raise ValueError("SweepCameraHead needs the depth of frame t: set "
                             "MODEL.MOTION_RCNN.XYZ_INPUT True (12-channel input)")
        if self.rotation_param != "euler_sines":
            raise ValueError("SweepCameraHead: set MODEL.CAMERA_MOTION_HEAD.ROTATION_PARAM "
                             "'euler_sines' (its yaw is the second Euler angle)")
        if int(sweep_stride) != sweep_stride or sweep_stride < 1:
            raise ValueError(f"MODEL.CAMERA_MOTION_HEAD.SWEEP_STRIDE = {sweep_stride!r}: an "
                             "integer >= 1")
        self.sweep_forward, self.sweep_yaw = tuple(sweep_forward), tuple(sweep_yaw)
        self.sweep_stride, self.sweep_clamp = int(sweep_stride), float(sweep_clamp)
        self.sweep_depth_clamp = float(sweep_depth_clamp)
        self.xyz_scale = float(xyz_scale)

    @classmethod
    def from_config(cls, cfg, input_shape):
        args = super().from_config(cfg, input_shape)
        head = cfg.MODEL.CAMERA_MOTION_HEAD
        args.update(sweep_forward=tuple(head.SWEEP_FORWARD), sweep_yaw=tuple(head.SWEEP_YAW),
                    sweep_stride=head.SWEEP_STRIDE, sweep_clamp=head.SWEEP_CLAMP,
                    sweep_depth_clamp=head.SWEEP_DEPTH_CLAMP,
                    xyz_scale=cfg.MODEL.MOTION_RCNN.XYZ_SCALE)
        return args

    def sweep(self, x, intrinsics):
        """The sweep's t_z (B,) metres, theta (B,) radians and first grid's costs (B, nz, ny)
        for the network input x (B, 12, H, W) and the intrinsics (B, 3, 3) of its pixel grid."""
        gray = x[:, 0:6].reshape(x.shape[0], 2, 3, *x.shape[-2:]).mean(dim=2)  # (B, 2, H, W)
        first = self.sweep_stride // 2
        sampled = (slice(None), slice(None), slice(first, None, self.sweep_stride),
                   slice(first, None, self.sweep_stride))
        points = x[:, 6:9][sampled] * self.xyz_scale
        depth_t1 = x[:, 11:12] * self.xyz_scale if self.sweep_depth_clamp > 0 else None
        return sweep_forward_motion(gray[:, 0:1][sampled], gray[:, 1:2], points, intrinsics,
                                    self.sweep_forward, self.sweep_yaw, self.sweep_clamp,
                                    depth_t1, self.sweep_depth_clamp)

    def forward(self, x, intrinsics=None):
        """x: (B, 12, H, W) the normalised network input; intrinsics: (B, 3, 3) K of its pixel
        grid -> as `CameraMotionHead`, plus "sweep_forward" (B,) and "sweep_yaw" (B,)."""
        if intrinsics is None:
            raise ValueError("SweepCameraHead needs the intrinsics of the input (B, 3, 3)")
        t_z, theta, costs = self.sweep(x.detach(), intrinsics.to(x.dtype))
        costs = costs.flatten(1)
        low, high = costs.min(dim=1, keepdim=True).values, costs.max(dim=1, keepdim=True).values
        extra = torch.cat([t_z[:, None], theta[:, None] / self.rotation_scale,
                           (costs - low) / (high - low).clamp(min=1e-6)], dim=1)
        zeros = torch.zeros_like(t_z)
        rotation_base = torch.stack([zeros, torch.sin(theta), zeros], dim=1)
        translation_base = torch.stack([self.translation_mean[0].expand_as(t_z),
                                        self.translation_mean[1].expand_as(t_z), t_z], dim=1)
        out = self._decode(self._raw(self._encode(x), extra), rotation_base, translation_base)
        out.update(sweep_forward=t_z, sweep_yaw=theta)
        return out
