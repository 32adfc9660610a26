"""Optical flow and scene flow from depth, instance masks and rigid motions (docs/method.md section 4).

For a pixel x = (u, v) with depth d:
    P   = d K^-1 [u, v, 1]^T                                         (camera t, metres)
    P'  = P + sum_k m_k(x) (R_k (P - p_k) + p_k + t_k - P)              (object motions)
    P'' = R_cam P' + t_cam                                             (camera motion)
    flow = (fx X''/Z'' + s Y''/Z'' + cx - u,  fy Y''/Z'' + cy - v)      (pixels)

Object k's displacement is linear in P: R_k (P - p_k) + p_k + t_k - P = A_k P + b_k with
A_k = R_k - I and b_k = t_k - A_k p_k. The soft-mask sum is therefore evaluated as one
(B, 12, N) x (B, N, H*W) product (per-pixel blended A and b), never as N full-size point clouds.

A pixel is valid when its depth is > 0 and finite and Z'' > eps; invalid pixels get flow 0, and
every division goes through a safe denominator so that no NaN/inf reaches the result or the
gradients (inputs at invalid pixels get zero gradient).
"""
import torch
import torch.nn.functional as F

from .camera import backproject, pixel_grid, project

__all__ = [
    "apply_object_motions",
    "apply_camera_motion",
    "compose_flow",
    "compose_flow_indexed",
    "instance_index_from_masks",
    "scene_flow",
    "camera_flow",
    "warp_backward",
]


def _affine_parameters(rotations, translations, pivots):
    """A_k = R_k - I and b_k = t_k - A_k p_k, packed (B, N, 12) = [A_k row-major (9), b_k (3)]."""
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    a = rotations - eye
    b = translations - (a @ pivots[..., None])[..., 0]
    return torch.cat([a.flatten(-2), b], dim=-1)


def _apply_affine(points, params):
    """P + A P + b with per-pixel params (B, 12, H, W) = [A row-major (9), b (3)].

    Row by row, (A P)_i = (a_i0 X + a_i1 Y) + a_i2 Z: no (B, 3, 3, H, W) temporary."""
    x, y, z = points.unbind(1)
    rows = []
    for i in range(3):
        a_p = params[:, 3 * i] * x + params[:, 3 * i + 1] * y + params[:, 3 * i + 2] * z
        rows.append(points[:, i] + a_p + params[:, 9 + i])
    return torch.stack(rows, dim=1)


def _check_motion_shapes(masks, rotations, translations, pivots):
    b, n = masks.shape[:2]
    expected = {"rotations": (b, n, 3, 3), "translations": (b, n, 3), "pivots": (b, n, 3)}
    given = {"rotations": rotations, "translations": translations, "pivots": pivots}
    for name, value in given.items():
        if tuple(value.shape) != expected[name]:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)}, expected {expected[name]} "
                f"(B, N taken from masks/instance motions of shape {tuple(masks.shape)})"
            )


def apply_object_motions(points, masks, rotations, translations, pivots):
    """Move points by mask-weighted rigid object motions:

        P' = P + sum_k m_k (R_k (P - p_k) + p_k + t_k - P)
           = P + (sum_k m_k A_k) P + sum_k m_k b_k,   A_k = R_k - I,  b_k = t_k - A_k p_k.

    Time and memory are O(N H W) for the mask product plus O(12 H W) for the blended motion.

    Args:
        points: (B, 3, H, W) metres, camera t.
        masks: (B, N, H, W) weights in [0, 1] (soft or binary; padding instances are all zero).
        rotations: (B, N, 3, 3); translations: (B, N, 3) metres; pivots: (B, N, 3) metres.
    Returns:
        (B, 3, H, W) moved points P' in metres (camera t).
    """
    if masks.dim() != 4 or masks.shape[0] != points.shape[0] or masks.shape[2:] != points.shape[2:]:
        raise ValueError(
            f"masks has shape {tuple(masks.shape)}, expected (B, N, H, W) with B, H, W "
            f"of the points/depth {tuple(points.shape)}"
        )
    _check_motion_shapes(masks, rotations, translations, pivots)
    bsz, num, height, width = masks.shape
    params = _affine_parameters(rotations, translations, pivots).to(points.dtype)  # (B, N, 12)
    blended = params.transpose(1, 2) @ masks.to(points.dtype).reshape(bsz, num, height * width)
    return _apply_affine(points, blended.reshape(bsz, 12, height, width))


def apply_camera_motion(points, rotation, translation):
    """Rigid camera motion: P'' = R_cam P' + t_cam (points of camera t in camera t+1 coordinates).

    Args:
        points: (B, 3, H, W) metres; rotation: (B, 3, 3); translation: (B, 3) metres.
    Returns:
        (B, 3, H, W) metres.
    """
    return torch.einsum("bij,bjhw->bihw", rotation.to(points.dtype), points) + translation.to(
        points.dtype
    )[:, :, None, None]


def _valid_depth_points(depth, intrinsics):
    """Back-project with invalid depth (<= 0 or non-finite) replaced by 1 m; returns (P, valid)."""
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"depth must have shape (B, 1, H, W), got {tuple(depth.shape)}")
    valid = (depth > 0) & torch.isfinite(depth)
    safe_depth = torch.where(valid, depth, torch.ones_like(depth))
    return backproject(safe_depth, intrinsics), valid[:, 0]


def _camera_or_identity(points, camera_rotation, camera_translation):
    if camera_rotation is None and camera_translation is None:
        return points
    bsz = points.shape[0]
    if camera_rotation is None:
        camera_rotation = torch.eye(3, dtype=points.dtype, device=points.device).expand(bsz, 3, 3)
    if camera_translation is None:
        camera_translation = points.new_zeros(bsz, 3)
    return apply_camera_motion(points, camera_rotation, camera_translation)


def _moved_points(depth, intrinsics, masks, rotations, translations, pivots, camera_rotation,
                  camera_translation):
    """(P, P'', depth_valid) for compose_flow / scene_flow; missing object motions default to
    R = I, t = 0, p = 0; missing camera rotation / translation to I / 0."""
    points, depth_valid = _valid_depth_points(depth, intrinsics)
    if masks is None:
        if any(x is not None for x in (rotations, translations, pivots)):
            raise ValueError("object motions (rotations/translations/pivots) were given without "
                             "masks: pass masks (B, N, H, W) too")
        moved = points
    else:
        bsz, num = masks.shape[:2]
        if rotations is None:
            eye = torch.eye(3, dtype=points.dtype, device=points.device)
            rotations = eye.expand(bsz, num, 3, 3)
        if translations is None:
            translations = points.new_zeros(bsz, num, 3)
        if pivots is None:
            pivots = points.new_zeros(bsz, num, 3)
        moved = apply_object_motions(points, masks, rotations, translations, pivots)
    moved = _camera_or_identity(moved, camera_rotation, camera_translation)
    return points, moved, depth_valid


def _flow_from_points(points, moved, intrinsics, depth_valid, eps, with_points=False):
    """(flow, valid), and with `with_points` also P and P'' - P, NaN where depth is invalid."""
    _, _, height, width = moved.shape
    pixels, proj_valid = project(moved, intrinsics, eps=eps)
    valid = depth_valid & proj_valid
    flow = pixels - pixel_grid(height, width, device=moved.device, dtype=moved.dtype)
    flow = flow.masked_fill(~valid[:, None], 0.0)
    if not with_points:
        return flow, valid
    drop = ~depth_valid[:, None]
    return (flow, valid, points.masked_fill(drop, float("nan")),
            (moved - points).masked_fill(drop, float("nan")))


def compose_flow(depth, intrinsics, masks=None, rotations=None, translations=None, pivots=None,
                 camera_rotation=None, camera_translation=None, eps=1e-6, with_points=False):
    """Optical flow from depth, (soft) instance masks, object motions and camera motion
    (module docstring equations). Differentiable w.r.t. all tensor inputs.

    Args:
        depth: (B, 1, H, W) metres, <= 0 or non-finite = invalid.
        intrinsics: (B, 3, 3) K in pixels.
        masks: (B, N, H, W) in [0, 1], or None for camera motion only.
        rotations: (B, N, 3, 3) (None = identity);
        translations, pivots: (B, N, 3) metres (None = 0).
        camera_rotation: (B, 3, 3) (None = identity); camera_translation: (B, 3) metres (None = 0).
        eps: minimum Z'' in metres for a valid projection.
        with_points: also return the 3D result of the same composition.
    Returns:
        flow: (B, 2, H, W) pixels (u, v), 0 where invalid; valid: (B, H, W) bool
        (depth > 0, finite, Z'' > eps). With `with_points` also points P (B, 3, H, W) and scene
        flow P'' - P (B, 3, H, W), metres in camera-t coordinates, NaN where depth is invalid;
        where `valid`, K (P + scene flow) projects exactly to pixel + flow.
    """
    points, moved, depth_valid = _moved_points(depth, intrinsics, masks, rotations, translations,
                                               pivots, camera_rotation, camera_translation)
    return _flow_from_points(points, moved, intrinsics, depth_valid, eps, with_points)


def compose_flow_indexed(depth, intrinsics, instance_index, rotations, translations, pivots,
                         camera_rotation=None, camera_translation=None, eps=1e-6,
                         with_points=False):
    """Optical flow with one instance per pixel (inference path, O(H W) in N).

    Equal to `compose_flow` with one-hot binary masks m_k(x) = [index(x) == k]: each pixel
    gathers (A_k, b_k) of its own instance (A_k = R_k - I, b_k = t_k - A_k p_k; background gets
    A = 0, b = 0) and P' = P + A P + b, then P'' = R_cam P' + t_cam and projection as there.

    Args:
        depth: (B, 1, H, W) metres; intrinsics: (B, 3, 3).
        instance_index: (B, H, W) int64, -1 = background, otherwise an index into N.
        rotations: (B, N, 3, 3); translations, pivots: (B, N, 3) metres.
        camera_rotation: (B, 3, 3) or None; camera_translation: (B, 3) metres or None.
        eps: minimum Z'' in metres. with_points: as in `compose_flow`.
    Returns:
        flow: (B, 2, H, W) pixels, 0 where invalid; valid: (B, H, W) bool; with `with_points`
        also points and scene flow as in `compose_flow`.
    """
    bsz, num = rotations.shape[:2]
    if instance_index.shape != (bsz,) + tuple(depth.shape[2:]):
        raise ValueError(f"instance_index has shape {tuple(instance_index.shape)}, expected "
                         f"{(bsz,) + tuple(depth.shape[2:])} (B, H, W) matching depth")
    if instance_index.numel() and (instance_index.min() < -1 or instance_index.max() >= num):
        raise ValueError(f"instance_index values must lie in [-1, {num - 1}] (-1 = background, "
                         f"N = {num} instance motions were given)")
    points, depth_valid = _valid_depth_points(depth, intrinsics)
    params = _affine_parameters(rotations, translations, pivots).to(points.dtype)
    params = torch.cat([params, params.new_zeros(bsz, 1, 12)], dim=1)  # background = slot N
    index = torch.where(instance_index < 0, torch.full_like(instance_index, num), instance_index)
    _, height, width = instance_index.shape
    per_pixel = [table.index_select(1, pixels)[None]  # (1, 12, H W): each pixel's (A, b)
                 for table, pixels in zip(params.transpose(1, 2).contiguous(),
                                          index.reshape(bsz, height * width))]
    per_pixel = (per_pixel[0] if bsz == 1 else torch.cat(per_pixel)).reshape(bsz, 12, height,
                                                                              width)
    moved = _apply_affine(points, per_pixel)
    moved = _camera_or_identity(moved, camera_rotation, camera_translation)
    return _flow_from_points(points, moved, intrinsics, depth_valid, eps, with_points)


def instance_index_from_masks(masks, scores, chunk_size=8):
    """Per-pixel instance index: the highest-scoring instance whose mask covers the pixel.

    Instance k gets the weight w_k = N - r_k, r_k its rank by descending score (ties: lower
    index first), so index(x) = order[N - max_k w_k m_k(x)] where that max is > 0, else -1.
    The max runs over chunks of `chunk_size` instances, keeping the (chunk, H, W) temporaries
    in cache: O(N H W) time, O(chunk H W) memory (an argmax over the instance axis of all N
    masks at once is ~20x slower on the CPU).

    Args:
        masks: (N, H, W) bool; scores: (N,); chunk_size: instances reduced at a time.
    Returns:
        (H, W) int64 in [-1, N-1], -1 where no mask covers the pixel.
    """
    num = masks.shape[0]
    if num == 0:
        return torch.full(masks.shape[1:], -1, dtype=torch.int64, device=masks.device)
    order = scores.argsort(descending=True, stable=True)
    dtype = torch.uint8 if num < 2 ** 8 else torch.int16 if num < 2 ** 15 else torch.int32
    weights = torch.empty(num, dtype=dtype, device=masks.device)
    weights[order] = torch.arange(num, 0, -1, dtype=dtype, device=masks.device)
    best = torch.zeros(masks.shape[1:], dtype=dtype, device=masks.device)
    for chunk, chunk_weights in zip(masks.split(chunk_size), weights.split(chunk_size)):
        weighted = chunk.to(dtype).mul_(chunk_weights[:, None, None])
        torch.maximum(best, weighted.amax(dim=0), out=best)
    lookup = torch.cat([order.new_full((1,), -1), order.flip(0)])  # lookup[w] = order[N - w]
    return lookup[best.long()]


def scene_flow(depth, intrinsics, masks=None, rotations=None, translations=None, pivots=None,
               camera_rotation=None, camera_translation=None):
    """3D scene flow P'' - P (object motions, then camera motion; without camera motion this is
    P' - P, the object-only scene flow). Arguments as in `compose_flow`.

    Returns:
        scene_flow: (B, 3, H, W) metres, 0 where invalid; valid: (B, H, W) bool (depth > 0 and
        finite; no projection is involved, so Z'' is not checked).
    """
    points, moved, depth_valid = _moved_points(depth, intrinsics, masks, rotations, translations,
                                               pivots, camera_rotation, camera_translation)
    delta = moved - points
    return torch.where(depth_valid[:, None], delta, torch.zeros_like(delta)), depth_valid


def camera_flow(depth, intrinsics, camera_rotation, camera_translation, eps=1e-6,
                with_points=False):
    """Optical flow of a static scene under camera motion only: `compose_flow` without masks,
    P'' = R_cam P + t_cam.

    Args:
        depth: (B, 1, H, W) metres; intrinsics: (B, 3, 3); camera_rotation: (B, 3, 3);
        camera_translation: (B, 3) metres. with_points: as in `compose_flow`.
    Returns:
        flow: (B, 2, H, W) pixels, 0 where invalid; valid: (B, H, W) bool (and with
        `with_points` points and scene flow as in `compose_flow`).
    """
    return compose_flow(depth, intrinsics, camera_rotation=camera_rotation,
                        camera_translation=camera_translation, eps=eps, with_points=with_points)


def warp_backward(image, flow):
    """Backward warp of frame t+1 to frame t: warped(x) = image(x + flow(x)), bilinear.

    Uses grid_sample with align_corners=True (pixel centres at integers: normalised
    g = 2 x / (W - 1) - 1) and padding_mode="border". A sample point is inside when
    0 <= x + flow_u <= W - 1 and 0 <= y + flow_v <= H - 1 (and finite); photometric losses
    should ignore pixels that are not inside.

    Args:
        image: (B, C, H, W) frame t+1 (any units).
        flow: (B, 2, H, W) pixels, flow from frame t to t+1.
    Returns:
        warped: (B, C, H, W) ~ frame t; inside: (B, H, W) bool.
    """
    _, _, height, width = image.shape
    grid = pixel_grid(height, width, device=flow.device, dtype=flow.dtype) + flow
    finite = torch.isfinite(grid).all(dim=1)
    grid = torch.where(finite[:, None], grid, torch.full_like(grid, -1.0))
    x, y = grid[:, 0], grid[:, 1]
    inside = finite & (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    normalised = torch.stack(
        [2.0 * x / max(width - 1, 1) - 1.0, 2.0 * y / max(height - 1, 1) - 1.0], dim=-1
    )
    warped = F.grid_sample(image, normalised.to(image.dtype), mode="bilinear",
                           padding_mode="border", align_corners=True)
    return warped, inside
