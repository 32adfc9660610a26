"""Losses of Motion R-CNN (docs/method.md section 6), shared by the RoI motion head, the camera head
and the meta-architecture.

Rigid motion terms (smooth-L1 with beta = 1, summed over components as in the thesis, in the
units the heads are normalised by: each difference is divided by its config scale):

    l_R = sum_ij smoothL1((R*_ij - R_ij) / s_R)        (9 matrix entries; s_R = ROTATION_SCALE)
    l_t = sum_i  smoothL1((t*_i - t_i) / s_t)          (metres / TRANSLATION_SCALE)
    l_p = sum_i  smoothL1((p*_i - p_i) / s_p)          (metres / PIVOT_SCALE)
    l_o = cross-entropy of the moving/still logits      (class 1 = moving)

RoI motion supervision: L_motion = 1/N_fg sum_k [(l_R + l_t) o*_k + l_p + l_o].
Flow supervision: per RoI, an m x m grid of points at the bin centres of the proposal box
(exactly what torchvision's roi_align samples with sampling_ratio=1, aligned=True); depth and
GT flow are sampled bilinearly there, the flow of those points is composed with
`geometry.compose_flow` and compared to the GT flow with an L1 loss (|du| + |dv|, pixels).
"""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from ..geometry import compose_flow, crop_intrinsics, scale_intrinsics

__all__ = [
    "FlowSupervision",
    "rigid_motion_terms",
    "pivot_term",
    "roi_grid_intrinsics",
    "roi_flow_loss",
    "camera_flow_loss",
]

# A bilinear sample counts as valid when the valid-indicator sampled with the same weights is
# (almost) 1, i.e. every neighbour with a non-zero weight is valid.
_VALID_FRACTION = 1.0 - 1e-3


def _smooth_l1_sum(pred, target, scale, dims):
    return F.smooth_l1_loss(pred / scale, target.to(pred.dtype) / scale, beta=1.0,
                            reduction="none").sum(dim=dims)


def rigid_motion_terms(pred_rotations, gt_rotations, pred_translations, gt_translations,
                       rotation_scale, translation_scale):
    """Per-row rotation and translation losses l_R, l_t (module docstring).

    Args:
        pred_rotations, gt_rotations: (N, 3, 3); pred_translations, gt_translations: (N, 3) m.
        rotation_scale, translation_scale: the normalisation scales (unitless, metres).
    Returns:
        (l_R, l_t): each (N,).
    """
    loss_rot = _smooth_l1_sum(pred_rotations, gt_rotations, rotation_scale, (-2, -1))
    loss_trans = _smooth_l1_sum(pred_translations, gt_translations, translation_scale, -1)
    return loss_rot, loss_trans


def pivot_term(pred_pivots, gt_pivots, pivot_scale):
    """Per-row pivot loss l_p = sum_i smoothL1((p*_i - p_i) / s_p); (N, 3) m -> (N,)."""
    return _smooth_l1_sum(pred_pivots, gt_pivots, pivot_scale, -1)


@dataclass
class FlowSupervision:
    """Batched inputs of the flow losses, padded to the network input size (B, ..., H, W).

    depth: (B, 1, H, W) metres (0 = invalid); intrinsics: (B, 3, 3) of the network input;
    flow: (B, 2, H, W) GT flow in pixels; flow_valid: (B, H, W) bool;
    camera_rotation / camera_translation: (B, 3, 3) / (B, 3) the predicted camera motion,
    soft-gated by its moving probability (`motion.gated_motion`), or None without a camera head.
    """

    depth: torch.Tensor
    intrinsics: torch.Tensor
    flow: torch.Tensor
    flow_valid: torch.Tensor
    camera_rotation: Optional[torch.Tensor] = None
    camera_translation: Optional[torch.Tensor] = None


def _box_sizes(boxes):
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-2)
    heights = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-2)
    return widths, heights


def roi_grid_intrinsics(intrinsics, boxes, grid_size):
    """Intrinsics of the m x m grid of bin centres inside each box, seen as an m x m image.

    A box (x0, y0, x1, y1) in Detectron2 coordinates covers [x0 - 0.5, x1 - 0.5] in pixel-centre
    coordinates; grid column j sits at u_j = x0 - 0.5 + (j + 0.5) w / m (w = x1 - x0). That is a
    crop with its left edge at x0 - 0.5 (principal point cx - x0) resized by m / w, so
    K_grid = scale_intrinsics(crop_intrinsics(K, x0, y0), m / w, m / h), and a flow of
    f grid pixels is f * w / m image pixels.

    Args:
        intrinsics: (R, 3, 3) K of the image each box lies in; boxes: (R, 4) XYXY pixels.
        grid_size: m.
    Returns:
        (R, 3, 3) K of the grid.
    """
    widths, heights = _box_sizes(boxes)
    cropped = crop_intrinsics(intrinsics, boxes[:, 0], boxes[:, 1])
    return scale_intrinsics(cropped, grid_size / widths, grid_size / heights)


def _grid_samples(image, rois, grid_size):
    """Bilinear samples (R, C, m, m) of image (B, C, H, W) at the bin centres of each RoI."""
    return roi_align(image, rois, output_size=grid_size, spatial_scale=1.0, sampling_ratio=1,
                     aligned=True)


def _sample_valid(value, valid, rois, grid_size):
    """Bilinear samples of `value` (B, C, H, W) at the grid points and their validity (R, m, m)."""
    fraction = _grid_samples(valid[:, None].to(value.dtype), rois, grid_size)[:, 0]
    values = _grid_samples(torch.where(valid[:, None], value, torch.zeros_like(value)), rois,
                           grid_size)
    return values, fraction > _VALID_FRACTION


def roi_flow_loss(boxes, batch_index, mask_probs, moving_probs, rotations, translations, pivots,
                  targets: FlowSupervision, grid_size):
    """Flow supervision of RoI motions: mean over RoIs of the mean L1 flow error on the valid
    points of each RoI's m x m grid.

    At grid point x of RoI k (image b): d(x) and the GT flow are sampled bilinearly; the mask
    weight is m_k(x) = sigmoid-mask resampled to the grid times the moving probability o_k;
    flow(x) = compose_flow with that single soft-masked motion (R_k, t_k, p_k) and then the
    camera motion of image b. A point is valid when its depth and GT flow samples are valid and
    Z'' > 0.

    Args:
        boxes: (R, 4) proposal boxes XYXY in pixels of the network input.
        batch_index: (R,) int64 image of each RoI.
        mask_probs: (R, M, M) predicted mask probabilities of the RoI's class over its box.
        moving_probs: (R,) predicted probability that the object moves.
        rotations: (R, 3, 3); translations, pivots: (R, 3) metres (the RoI's class).
        targets: the batched depth, intrinsics, GT flow and camera motion.
        grid_size: m.
    Returns:
        0-d loss in pixels (0 with gradients to every input when R = 0).
    """
    num = boxes.shape[0]
    rois = torch.cat([batch_index[:, None].to(boxes.dtype), boxes], dim=1)
    depth_valid = (targets.depth[:, 0] > 0) & torch.isfinite(targets.depth[:, 0])
    depth, depth_ok = _sample_valid(targets.depth, depth_valid, rois, grid_size)
    gt_flow, flow_ok = _sample_valid(targets.flow, targets.flow_valid, rois, grid_size)
    depth = torch.where(depth_ok[:, None], depth, torch.zeros_like(depth))

    masks = F.interpolate(mask_probs[:, None], size=(grid_size, grid_size), mode="bilinear",
                          align_corners=False) * moving_probs[:, None, None, None]
    camera_rotation = camera_translation = None
    if targets.camera_rotation is not None:
        camera_rotation = targets.camera_rotation[batch_index]
        camera_translation = targets.camera_translation[batch_index]
    flow, valid = compose_flow(depth, roi_grid_intrinsics(targets.intrinsics[batch_index], boxes,
                                                          grid_size),
                               masks, rotations[:, None], translations[:, None], pivots[:, None],
                               camera_rotation, camera_translation)
    widths, heights = _box_sizes(boxes)
    flow = flow * torch.stack([widths, heights], dim=1)[:, :, None, None] / grid_size
    valid = valid & flow_ok
    error = (flow - gt_flow).abs().sum(dim=1) * valid
    per_roi = error.sum(dim=(1, 2)) / valid.sum(dim=(1, 2)).clamp(min=1)
    return per_roi.sum() / max(num, 1)


def camera_flow_loss(targets: FlowSupervision, background):
    """L1 error (|du| + |dv|, pixels) of the camera-only flow, averaged over the batch's pixels
    that are outside all GT instances, have valid GT flow and valid composed flow.

    Args:
        targets: batched inputs with the (soft-gated) predicted camera motion.
        background: (B, H, W) bool, True outside all GT instance masks.
    Returns:
        0-d loss in pixels (0 with gradients when no pixel qualifies).
    """
    flow, valid = compose_flow(targets.depth, targets.intrinsics,
                               camera_rotation=targets.camera_rotation,
                               camera_translation=targets.camera_translation)
    selected = valid & targets.flow_valid & background
    error = (flow - targets.flow).abs().sum(dim=1) * selected
    return error.sum() / selected.sum().clamp(min=1)
