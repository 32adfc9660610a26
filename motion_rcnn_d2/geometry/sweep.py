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

__all__ = ["grid_search", "object_motion_costs", "sweep_costs", "sweep_forward_motion",
           "sweep_object_motion"]


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


def _combinations(values):
    """values: D tensors (B, n_d) -> (B, n_0 ... n_D-1, D) every combination, the first axis
    the slowest."""
    index = torch.stack(torch.meshgrid(*[torch.arange(v.shape[1], device=v.device)
                                         for v in values], indexing="ij"), dim=-1)
    index = index.reshape(-1, len(values))
    return torch.stack([v[:, index[:, d]] for d, v in enumerate(values)], dim=-1)


def _unravel(flat_index, counts):
    """(B,) indices into a grid of `counts` -> (B, D) per-axis indices."""
    index = []
    for count in reversed(counts):
        index.append(flat_index % count)
        flat_index = flat_index // count
    return torch.stack(index[::-1], dim=1)


@torch.no_grad()
def grid_search(cost_fn, centres, steps, counts):
    """Minimise a cost over D parameters: a grid of counts[d] values steps[d] apart around
    centres[:, d], then a grid of 5 values per axis half a step apart around the best cell,
    then a parabola through the best cell's neighbours along each axis (`_parabola_offset`).

    Args:
        cost_fn: (B, N, D) parameter hypotheses -> (B, N) costs.
        centres: (B, D) the middle of the first grid.
        steps: D floats; counts: D integers >= 1.
    Returns:
        (B, D) the best parameters, and the first grid's costs (B, *counts).
    """
    batch, dims = centres.shape
    steps = [float(step) for step in steps]
    counts = [int(count) for count in counts]
    values = [centres[:, d:d + 1] + (torch.arange(counts[d], device=centres.device,
                                                  dtype=centres.dtype) - (counts[d] - 1) / 2)
              * steps[d] for d in range(dims)]
    coarse = cost_fn(_combinations(values)).reshape(batch, *counts)
    best = _unravel(coarse.flatten(1).argmin(dim=1), counts)
    half = torch.arange(-2, 3, device=centres.device, dtype=centres.dtype) / 2
    values = [values[d].gather(1, best[:, d:d + 1]) + half * steps[d] for d in range(dims)]
    costs = cost_fn(_combinations(values)).flatten(1)
    fine = [5] * dims
    best = _unravel(costs.argmin(dim=1), fine)
    strides = torch.tensor([5 ** (dims - 1 - d) for d in range(dims)], device=centres.device)
    result = []
    for d in range(dims):
        along = []
        for k in range(5):  # the costs along axis d through the best cell
            index = best.clone()
            index[:, d] = k
            along.append(costs.gather(1, (index * strides).sum(dim=1, keepdim=True))[:, 0])
        offset = _parabola_offset(torch.stack(along, dim=1), best[:, d], 5)
        result.append(values[d].gather(1, best[:, d:d + 1])[:, 0] + offset * steps[d] / 2)
    return torch.stack(result, dim=1), coarse


@torch.no_grad()
def sweep_forward_motion(gray_t, gray_t1, points, intrinsics, forward, yaws, clamp,
                         depth_t1=None, depth_clamp=1.0):
    """The forward translation t_z and yaw theta of the best camera-motion hypothesis
    (R = Ry(theta), t = (0, 0, t_z)): `grid_search` over `forward` x `yaws`.

    Args:
        gray_t, gray_t1, points, intrinsics, clamp, depth_t1, depth_clamp: as in
            `sweep_costs`.
        forward: (min, max, num) of t_z in metres (a camera driving forward has t_z < 0).
        yaws: (min, max, num) of theta in radians (Euler angle about the camera's y axis).
    Returns:
        t_z (B,) metres, theta (B,) radians, and the costs of the first grid (B, nz, ny).
    """
    def costs(params):  # (B, N, 2): t_z, theta
        translations = torch.stack([torch.zeros_like(params[..., 0]),
                                    torch.zeros_like(params[..., 0]), params[..., 0]], dim=-1)
        return sweep_costs(gray_t, gray_t1, points, intrinsics, _yaw_rotations(params[..., 1]),
                           translations, clamp, depth_t1, depth_clamp)

    ranges = (forward, yaws)
    centres = points.new_tensor([(float(lo) + float(hi)) / 2 for lo, hi, _ in ranges])
    steps = [(float(hi) - float(lo)) / (int(num) - 1) if int(num) > 1 else 0.0
             for lo, hi, num in ranges]
    best, coarse = grid_search(costs, centres.expand(points.shape[0], -1), steps,
                               [int(num) for _, _, num in ranges])
    return best[:, 0], best[:, 1], coarse


def object_motion_costs(gray_t, gray_t1, points, intrinsics, rotations, translations, pivots,
                        camera_rotations, camera_translations, clamp, depth_t1=None,
                        depth_clamp=1.0):
    """`sweep_costs` of object-motion hypotheses followed by the camera's motion:
    P'' = R_c (R (P - p) + p + t) + t_c.

    Args:
        gray_t, gray_t1, points, intrinsics, clamp, depth_t1, depth_clamp: as in
            `sweep_costs`, one batch entry per object.
        rotations: (N, S, 3, 3); translations: (N, S, 3) metres; S hypotheses per object.
        pivots: (N, 3) metres; camera_rotations (N, 3, 3), camera_translations (N, 3).
    Returns:
        (N, S) costs.
    """
    pivot = pivots[:, None]
    offset = pivot + translations - (rotations @ pivot[..., None])[..., 0]  # P' = R P + offset
    total_rotation = camera_rotations[:, None] @ rotations
    total_translation = ((camera_rotations[:, None] @ offset[..., None])[..., 0]
                         + camera_translations[:, None])
    return sweep_costs(gray_t, gray_t1, points, intrinsics, total_rotation, total_translation,
                       clamp, depth_t1, depth_clamp)


@torch.no_grad()
def sweep_object_motion(gray_t, gray_t1, points, intrinsics, rotations, translations, pivots,
                        camera_rotations, camera_translations, yaw_grid, shift_grid, clamp,
                        depth_t1=None, depth_clamp=1.0):
    """Object motions refined by a sweep around a prediction (R_k, t_k, pivot p_k).

    The predicted motion P' = R_k (P - p_k) + p_k + t_k is rewritten about the centroid c of
    the object's points, P' = R_k (P - c) + c + u_k with u_k = R_k (c - p_k) + p_k + t_k - c,
    so that turning the object (about its own centre) barely moves it as a whole. Hypothesis
    (dtheta, dx, dz):

        R = Ry(dtheta) R_k,   P'' = R_c (R (P - c) + c + u_k + (dx, 0, dz)) + t_c,

    (the camera's motion R_c, t_c after the object's), whose cost is `object_motion_costs`
    over the object's points. Two `grid_search`es: (dx, dz) at the predicted yaw over the shift
    grid, then (dtheta, dx, dz) over the yaw grid x 5 x 5 half shift steps around the best
    shift (the cost is sharp in the shift and flat in the yaw: a joint coarse grid as fine in
    the shift costs far more). The result is returned about the predicted pivot:
    t = R (p_k - c) + c + u_k + (dx, 0, dz) - p_k.

    Args:
        gray_t: (N, 1, 1, M) frame t at each object's points; points: (N, 3, 1, M) the points
            in metres (padding: Z = 0; each object needs at least one valid point).
        gray_t1: (N, 1, H, W) frame t+1 (one per object; an expanded tensor is fine);
            depth_t1: optional (N, 1, H, W); intrinsics: (N, 3, 3).
        rotations: (N, 3, 3); translations, pivots: (N, 3) metres; camera_rotations (N, 3, 3),
            camera_translations (N, 3): the predicted object and camera motions.
        yaw_grid: (step radians, count); shift_grid: (step metres, count) of dx and dz.
        clamp, depth_clamp: as in `sweep_costs`.
    Returns:
        refined rotations (N, 3, 3) and translations (N, 3).
    """
    flat = points.flatten(2)
    valid = (flat[:, 2] > 0).to(flat.dtype)
    centre = (flat * valid[:, None]).sum(dim=2) / valid.sum(dim=1, keepdim=True).clamp(min=1)
    centre_shift = ((rotations @ (centre - pivots)[..., None])[..., 0] + pivots + translations
                    - centre)  # u_k

    def motion(params):  # (N, S, 3): dtheta, dx, dz -> R (N, S, 3, 3), u_k + d (N, S, 3)
        rotation = _yaw_rotations(params[..., 0]) @ rotations[:, None]
        shift = torch.stack([params[..., 1], torch.zeros_like(params[..., 1]), params[..., 2]],
                            dim=-1)
        return rotation, centre_shift[:, None] + shift

    def costs(params):
        return object_motion_costs(gray_t, gray_t1, points, intrinsics, *motion(params), centre,
                                   camera_rotations, camera_translations, clamp, depth_t1,
                                   depth_clamp)

    def shift_costs(params):  # (N, S, 2): dx, dz at dtheta = 0
        return costs(torch.cat([torch.zeros_like(params[..., :1]), params], dim=-1))

    (yaw_step, yaw_count), (shift_step, shift_count) = yaw_grid, shift_grid
    shift, _ = grid_search(shift_costs, translations.new_zeros(translations.shape[0], 2),
                           [shift_step, shift_step], [shift_count, shift_count])
    best, _ = grid_search(costs, torch.cat([torch.zeros_like(shift[:, :1]), shift], dim=1),
                          [yaw_step, shift_step / 2, shift_step / 2], [yaw_count, 5, 5])
    rotation, translation = (m[:, 0] for m in motion(best[:, None]))
    # about c: R (P - c) + c + translation  ->  about p_k: t = R (p_k - c) + c + translation - p_k
    about_pivot = (rotation @ (pivots - centre)[..., None])[..., 0] + centre - pivots
    return rotation, about_pivot + translation
