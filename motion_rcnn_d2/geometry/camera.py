"""Pinhole camera: pixel grid, back-projection, projection, and intrinsics under resize / flip.

Conventions (docs/method.md): camera coordinates in metres, x right, y down, z forward.
Pixel (u, v) = (column, row) with pixel CENTRES at integer coordinates.
K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]] in pixels (skew s is 0 for every data set used here,
but it is carried through correctly).
"""
import torch

__all__ = ["pixel_grid", "backproject", "project", "check_intrinsics", "crop_intrinsics",
           "scale_intrinsics", "flip_intrinsics"]


def check_intrinsics(intrinsics, where, fix=""):
    """A pinhole K as a float64 tensor, or a ValueError naming ``where``.

    K must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with finite entries and fx, fy > 0
    (pixels). Args: intrinsics: anything `torch.as_tensor` reads (None is refused); where:
    what the message names (a file, an input); fix: a sentence added to the message.
    """
    try:
        k = torch.as_tensor(intrinsics if intrinsics is not None else float("nan"),
                            dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        k = torch.tensor(float("nan"), dtype=torch.float64)
    eye_row = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64, device=k.device)
    if (k.shape != (3, 3) or not bool(torch.isfinite(k).all()) or k[0, 0] <= 0 or k[1, 1] <= 0
            or abs(float(k[1, 0])) > 1e-9 or float((k[2] - eye_row).abs().max()) > 1e-9):
        raise ValueError(
            f"{where}: 'intrinsics' must be a 3x3 pinhole matrix [[fx, s, cx], [0, fy, cy], "
            f"[0, 0, 1]] with finite fx > 0 and fy > 0 (pixels), got {k.tolist()}. {fix}".strip())
    return k


def pixel_grid(height, width, device=None, dtype=torch.float32):
    """Pixel-centre coordinates of an image: grid[0, v, u] = u (column), grid[1, v, u] = v (row).

    Args:
        height, width: image size in pixels.
        device, dtype: of the result.
    Returns:
        (2, H, W) pixels.
    """
    v = torch.arange(height, device=device, dtype=dtype)
    u = torch.arange(width, device=device, dtype=dtype)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=0)


def _unpack(intrinsics):
    """fx, s, cx, fy, cy of K (B,3,3), each shaped (B,1,1) to broadcast over (B,H,W)."""
    k = intrinsics[:, :, :, None, None]
    return k[:, 0, 0], k[:, 0, 1], k[:, 0, 2], k[:, 1, 1], k[:, 1, 2]


def backproject(depth, intrinsics):
    """3D points of a depth map: P = d K^-1 [u, v, 1]^T, i.e.

        Y = d (v - cy) / fy,   X = d (u - cx - s Y/d) / fx,   Z = d.

    Depth is used as given (invalid values propagate); callers mask invalid depth first.

    Args:
        depth: (B, 1, H, W) metres (z-depth, not range).
        intrinsics: (B, 3, 3) K in pixels for this image size.
    Returns:
        (B, 3, H, W) points (X, Y, Z) in metres, camera coordinates.
    """
    _, _, height, width = depth.shape
    v = torch.arange(height, device=depth.device, dtype=depth.dtype)[:, None]  # rows
    u = torch.arange(width, device=depth.device, dtype=depth.dtype)  # columns
    fx, s, cx, fy, cy = _unpack(intrinsics.to(depth.dtype))
    y_n = (v - cy) / fy  # (B, H, 1)
    x_n = (u - cx - s * y_n) / fx  # (B, H, W)
    d = depth[:, 0]
    return torch.stack([x_n * d, y_n * d, d], dim=1)


def project(points, intrinsics, eps=1e-6):
    """Pixel coordinates of 3D points: u = fx X/Z + s Y/Z + cx, v = fy Y/Z + cy.

    A point is valid when Z > eps and X, Y, Z are finite. Invalid points get pixel (0, 0); the
    division uses a safe denominator (torch.where), so neither the result nor its gradient is
    NaN/inf there.

    Args:
        points: (B, 3, H, W) metres.
        intrinsics: (B, 3, 3) K in pixels.
        eps: minimum depth in metres.
    Returns:
        pixels: (B, 2, H, W) (u, v) in pixels; valid: (B, H, W) bool.
    """
    valid = (points[:, 2] > eps) & torch.isfinite(points).all(dim=1)
    invalid = ~valid[:, None]
    safe = points.masked_fill(invalid, 1.0)
    x_n = safe[:, 0] / safe[:, 2]
    y_n = safe[:, 1] / safe[:, 2]
    fx, s, cx, fy, cy = _unpack(intrinsics.to(points.dtype))
    pixels = torch.stack([fx * x_n + s * y_n + cx, fy * y_n + cy], dim=1)
    return pixels.masked_fill(invalid, 0.0), valid


def _as_tensor(value, like):
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def scale_intrinsics(intrinsics, scale_x, scale_y):
    """Intrinsics of an image resized by (scale_x, scale_y) = (W'/W, H'/H).

    With pixel centres at integers, a pixel coordinate maps as x' = sx (x + 0.5) - 0.5, so
    K' = S @ K with S = [[sx, 0, (sx - 1)/2], [0, sy, (sy - 1)/2], [0, 0, 1]]:

        fx' = sx fx,  s' = sx s,  cx' = sx (cx + 0.5) - 0.5,
        fy' = sy fy,  cy' = sy (cy + 0.5) - 0.5.

    Args:
        intrinsics: (..., 3, 3) K in pixels.
        scale_x, scale_y: floats or tensors broadcastable to (...), unitless.
    Returns:
        (..., 3, 3) K' in pixels of the resized image.
    """
    sx = _as_tensor(scale_x, intrinsics)
    sy = _as_tensor(scale_y, intrinsics)
    sx, sy = torch.broadcast_tensors(sx, sy)
    one, zero = torch.ones_like(sx), torch.zeros_like(sx)
    s_mat = torch.stack(
        [sx, zero, (sx - 1) / 2, zero, sy, (sy - 1) / 2, zero, zero, one], dim=-1
    ).reshape(sx.shape + (3, 3))
    return s_mat @ intrinsics


def crop_intrinsics(intrinsics, x0, y0):
    """Intrinsics of the crop whose top-left pixel is (x0, y0) of the image: a pixel coordinate
    maps as x' = x - x0, so cx' = cx - x0, cy' = cy - y0 (the rest unchanged).

    Args:
        intrinsics: (..., 3, 3) K in pixels.
        x0, y0: floats or tensors broadcastable to (...), pixels.
    Returns:
        (..., 3, 3) K' in pixels of the crop.
    """
    x0, y0 = torch.broadcast_tensors(_as_tensor(x0, intrinsics), _as_tensor(y0, intrinsics))
    offset = torch.zeros(x0.shape + (3, 3), dtype=intrinsics.dtype, device=intrinsics.device)
    offset[..., 0, 2] = x0
    offset[..., 1, 2] = y0
    return intrinsics - offset


def flip_intrinsics(intrinsics, width):
    """Intrinsics of a horizontally flipped image of `width` pixels, for the mirrored scene
    (X -> -X in camera coordinates, which is how flipped 3D labels must be mirrored too).

    Pixel u -> W - 1 - u and X -> -X give K' = F @ K @ M with F = [[-1, 0, W-1], [0, 1, 0],
    [0, 0, 1]] and M = diag(-1, 1, 1):

        fx' = fx,  s' = -s,  cx' = W - 1 - cx,  fy' = fy,  cy' = cy.

    Args:
        intrinsics: (..., 3, 3) K in pixels.
        width: image width in pixels (int, float or tensor broadcastable to (...)).
    Returns:
        (..., 3, 3) K' in pixels.
    """
    w = _as_tensor(width, intrinsics)
    sign = _as_tensor([[1.0, -1.0, -1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], intrinsics)
    offset = torch.zeros(w.shape + (3, 3), dtype=intrinsics.dtype, device=intrinsics.device)
    offset[..., 0, 2] = w - 1
    return intrinsics * sign + offset
