"""SfM-Net's losses (docs/method.md section 9). Each takes one image or a batch of equal-size crops
(no padding inside) and returns a 0-d tensor; masked means divide by max(1, count)."""
import torch

from ...geometry import warp_backward

__all__ = ["photometric_loss", "smoothness_loss", "depth_loss", "camera_motion_loss",
           "flow_loss"]


def _masked_mean(values, mask):
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def photometric_loss(image, image_next, flow, valid):
    """Photometric L1 between frame t and frame t+1 warped back by the flow:

        L = mean_{x: valid(x), x + w(x) inside} (1/C) sum_c | I_t(x)_c - I_t+1(x + w(x))_c |

    with bilinear sampling (geometry.warp_backward); pixels whose flow leaves the image, or whose
    flow is invalid, are left out.

    Args:
        image, image_next: (B, C, H, W) frames t and t+1 in [0, 1] (grey levels / 255).
        flow: (B, 2, H, W) pixels; valid: (B, H, W) bool.
    Returns:
        0-d tensor (grey levels / 255).
    """
    warped, inside = warp_backward(image_next, flow)
    error = (image - warped).abs().mean(dim=1)
    return _masked_mean(error, inside & valid)


def smoothness_loss(values):
    """L1 on spatial gradients (forward differences):

        L = mean |v(x+1, y) - v(x, y)| + mean |v(x, y+1) - v(x, y)|   over all channels.

    Args:
        values: (B, C, H, W) (depth in m, flow in px, masks in [0, 1]).
    Returns:
        0-d tensor in the units of `values` per pixel.
    """
    dx = (values[..., :, 1:] - values[..., :, :-1]).abs().mean()
    dy = (values[..., 1:, :] - values[..., :-1, :]).abs().mean()
    return dx + dy


def depth_loss(depth, gt_depth):
    """L1 on valid depth: mean_{x: d*(x) > 0, finite} |d(x) - d*(x)|.

    Args:
        depth, gt_depth: (B, 1, H, W) metres (GT 0 = invalid).
    Returns:
        0-d tensor, metres.
    """
    valid = (gt_depth > 0) & torch.isfinite(gt_depth)
    safe_gt = torch.where(valid, gt_depth, depth.detach())
    return _masked_mean((depth - safe_gt).abs(), valid)


def camera_motion_loss(rotation, translation, gt_rotation, gt_translation):
    """L1 on the camera motion: mean over the batch of sum_ij |R_ij - R*_ij| + sum_i |t_i - t*_i|.

    Args:
        rotation, gt_rotation: (B, 3, 3); translation, gt_translation: (B, 3) metres.
    Returns:
        0-d tensor.
    """
    rot = (rotation - gt_rotation).abs().flatten(1).sum(dim=1)
    trans = (translation - gt_translation).abs().sum(dim=1)
    return (rot + trans).mean()


def flow_loss(flow, gt_flow, valid):
    """L1 flow supervision: mean_{x: valid} |u - u*| + |v - v*| (pixels).

    Args:
        flow, gt_flow: (B, 2, H, W) pixels; valid: (B, H, W) bool (GT valid and flow defined).
    Returns:
        0-d tensor, pixels.
    """
    safe_gt = torch.where(valid[:, None], gt_flow, flow.detach())
    return _masked_mean((flow - safe_gt).abs().sum(dim=1), valid)
