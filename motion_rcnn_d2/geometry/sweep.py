"""Ego-motion sweep: the camera motion that best explains frame t+1 given frame t's depth.

For a camera-motion hypothesis (R_n, t_n), a static point P(x) of frame t (metres, camera t)
is seen in frame t+1 at pi(K (R_n P(x) + t_n)). Its photometric cost is

    c_n = mean_x min(|I_t(x) - I_t+1(pi(K (R_n P(x) + t_n)))|, clamp)

over the pixels x whose point is valid and lands inside frame t+1 (I_t+1 bilinear, pixel
centres at integers). Given frame t+1's depth D_t+1, a static point must also land on its
surface: the term min(|Z'(x) - D_t+1(x')|, depth_clamp) (Z' the moved point's depth, x' its
pixel), scaled to the photometric clamp, is added to each pixel's error. It tells the forward
speed where texture cannot (a far wall comes nearer by t_z; streaks along the direction of
motion look alike for any speed). The truncations bound what moving objects and occlusions
contribute.
The sweep evaluates a grid of forward translations t_z and yaws (rotation about the camera's
y axis) and refines the best one, like a plane sweep in multi-view stereo.
"""
import torch
import torch.nn.functional as F

from .camera import project
from .rotations import euler_angles_to_matrix

__all__ = ["sweep_costs", "sweep_forward_motion"]


def sweep_costs(gray_t, gray_t1, points, intrinsics, rotations, translations, clamp,
                depth_t1=None, depth_clamp=1.0):
    """Photometric cost c_n of each hypothesis (module docstring).

    Args:
        gray_t: (B, 1, h, w) frame t at the pixels of `points`.
        gray_t1: (B, 1, H, W) frame t+1.
        points: (B, 3, h, w) points of frame t in metres; invalid where Z <= 0 or not finite.
        intrinsics: (B, 3, 3) K of frame t+1's pixel grid.
        rotations: (B, N, 3, 3); translations: (B, N, 3) metres; hypotheses P -> R P + t.
        clamp: truncation of the absolute difference (units of the frames).
        depth_t1: optional (B, 1, H, W) depth of frame t+1 in metres (<= 0: invalid); adds the
            geometric term min(|Z'(x) - D_t+1(x')|, depth_clamp) / depth_clamp x clamp, Z' the
            moved point's depth and x' its pixel (a static point must land on frame t+1's
            surface); where D_t+1 is invalid around x' the term is the clamp.
    Returns:
        (B, N) costs; `clamp` for a hypothesis that leaves no pixel inside.
    """
    batch, num = translations.shape[:2]
    _, _, h, w = points.shape
    height, width = gray_t1.shape[-2:]
    flat = points.flatten(2)
    moved = torch.einsum("bnij,bjp->bnip", rotations, flat) + translations[..., None]
    pixels, valid = project(moved.reshape(batch * num, 3, h, w),
                            intrinsics.repeat_interleave(num, dim=0))
    u, v = pixels[:, 0].reshape(batch, num, -1), pixels[:, 1].reshape(batch, num, -1)
    start_valid = (flat[:, 2] > 0) & torch.isfinite(flat).all(dim=1)
    inside = (valid.reshape(batch, num, -1) & start_valid[:, None]
              & (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1))
    grid = torch.stack([2.0 * u / max(width - 1, 1) - 1.0, 2.0 * v / max(height - 1, 1) - 1.0],
                       dim=-1)
    warped = F.grid_sample(gray_t1, grid.to(gray_t1.dtype), mode="bilinear",
                           padding_mode="border", align_corners=True)[:, 0]  # (B, N, h*w)
    error = (warped - gray_t.flatten(2)).abs().clamp(max=clamp)
    if depth_t1 is not None:  # the depth and its validity, sampled in one pass
        both = torch.cat([depth_t1, (depth_t1 > 0).to(depth_t1.dtype)], dim=1)
        sampled, valid_t1 = F.grid_sample(both, grid.to(both.dtype), mode="bilinear",
                                          padding_mode="border", align_corners=True).unbind(1)
        gap = (moved[:, :, 2] - sampled).abs().clamp(max=depth_clamp)
        gap = torch.where(valid_t1 > 0.999, gap, torch.full_like(gap, depth_clamp))
        error = error + gap * (clamp / depth_clamp)
    count = inside.sum(dim=-1)
    total = torch.where(inside, error, torch.zeros_like(error)).sum(dim=-1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, clamp))


def _yaw_rotations(yaws):
    zeros = torch.zeros_like(yaws)
    return euler_angles_to_matrix(torch.stack([zeros, yaws, zeros], dim=-1))


def _parabola_offset(costs, index, num):
    """Sub-step offset in (-0.5, 0.5) of the minimum of the parabola through the costs at
    index - 1, index, index + 1 (0 at the grid's ends or without curvature). costs (B, num)."""
    inner = (index > 0) & (index < num - 1)
    lo, hi = (index - 1).clamp(min=0), (index + 1).clamp(max=num - 1)
    c0, c1, c2 = (costs.gather(1, i[:, None])[:, 0] for i in (lo, index, hi))
    curvature = c0 - 2 * c1 + c2
    offset = 0.5 * (c0 - c2) / torch.where(curvature > 0, curvature, torch.ones_like(curvature))
    return torch.where(inner & (curvature > 0), offset.clamp(-0.5, 0.5), torch.zeros_like(offset))


@torch.no_grad()
def sweep_forward_motion(gray_t, gray_t1, points, intrinsics, forward, yaws, clamp,
                         depth_t1=None, depth_clamp=1.0):
    """The forward translation t_z and yaw theta of the best camera-motion hypothesis
    (R = Ry(theta), t = (0, 0, t_z)): a grid over `forward` x `yaws`, then a grid of half the
    steps around the best cell, then a parabola through the neighbours along each axis.

    Args:
        gray_t, gray_t1, points, intrinsics, clamp, depth_t1, depth_clamp: as in
            `sweep_costs`.
        forward: (min, max, num) of t_z in metres (a camera driving forward has t_z < 0).
        yaws: (min, max, num) of theta in radians (Euler angle about the camera's y axis).
    Returns:
        t_z (B,) metres, theta (B,) radians, and the costs of the first grid (B, nz, ny).
    """
    def grid(lo, hi, num):
        return torch.linspace(float(lo), float(hi), int(num), device=points.device,
                              dtype=points.dtype)

    z_values, yaw_values = grid(*forward), grid(*yaws)
    steps = [(vals[1] - vals[0]) if len(vals) > 1 else vals.new_tensor(0.0)
             for vals in (z_values, yaw_values)]
    batch = points.shape[0]
    centre_z = centre_yaw = None
    for level in range(2):
        if level == 0:
            zs = z_values.expand(batch, -1)
            ys = yaw_values.expand(batch, -1)
        else:  # 5 x 5 around the coarse minimum, half the steps
            offsets = torch.arange(-2, 3, device=points.device, dtype=points.dtype) / 2
            zs, ys = centre_z[:, None] + offsets * steps[0], centre_yaw[:, None] + offsets * steps[1]
        nz, ny = zs.shape[1], ys.shape[1]
        z_grid = zs[:, :, None].expand(-1, -1, ny).reshape(batch, -1)
        y_grid = ys[:, None, :].expand(-1, nz, -1).reshape(batch, -1)
        translations = torch.stack([torch.zeros_like(z_grid), torch.zeros_like(z_grid), z_grid],
                                   dim=-1)
        costs = sweep_costs(gray_t, gray_t1, points, intrinsics, _yaw_rotations(y_grid),
                            translations, clamp, depth_t1, depth_clamp).reshape(batch, nz, ny)
        if level == 0:
            coarse = costs
        best = costs.flatten(1).argmin(dim=1)
        iz, iy = best // ny, best % ny
        centre_z = zs.gather(1, iz[:, None])[:, 0]
        centre_yaw = ys.gather(1, iy[:, None])[:, 0]
    along_z = costs.gather(2, iy[:, None, None].expand(-1, nz, 1))[:, :, 0]
    along_yaw = costs.gather(1, iz[:, None, None].expand(-1, 1, ny))[:, 0]
    t_z = centre_z + _parabola_offset(along_z, iz, nz) * steps[0] / 2
    theta = centre_yaw + _parabola_offset(along_yaw, iy, ny) * steps[1] / 2
    return t_z, theta, coarse
