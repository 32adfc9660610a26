"""Exact vectorised ray casting of the synthetic world (numpy, no per-pixel Python loops).

Ray of pixel (u, v) in camera t: direction d_c = K^-1 [u, v, 1]^T (z component 1, so the
ray parameter s of a hit C + s d is its depth Z), in world coordinates d_w = R_e^T d_c from
the camera centre C = -R_e^T t_e. Surfaces, nearest hit wins:
- ground plane y = camera_height:  s = (h - C_y) / d_w,y       (d_w,y > 0);
- far background plane z = far_z:  s = (far_z - C_z) / d_w,z  (d_w,z > 0);
- each box, in its own coordinates (origin o, rotation R_o): ray o_l = R_o^T (C - o),
  d_l = R_o^T d_w against the slabs [-l/2, l/2] x [-h, 0] x [-w/2, w/2]:
  s_near = max_d min(s1_d, s2_d), s_far = min_d max(s1_d, s2_d), hit when 0 < s_near <= s_far.
Rays are first culled per box by the image rectangle of its projected corners (exact: the
projection of a convex box in front of the camera lies inside it).

Colours come from textures of surface coordinates (ground: world (x, z), fading into the far
plane's colour near it; far plane: world (x, y); boxes: object coordinates, with a per-face
albedo) and do not depend on the view.
"""
import numpy as np

from .scene import CATEGORY_INDEX

__all__ = ["SURFACE_GROUND", "SURFACE_FAR", "box_corners", "pixel_coordinates", "cast_rays",
           "render_frame"]

SURFACE_GROUND = 0
SURFACE_FAR = 1  # object k (index into scene.objects) has surface code 2 + k
GROUND_BLEND_M = 30.0  # the ground's colour turns into the far plane's over this distance (m)


def pixel_coordinates(width, height):
    """(H*W, 2) pixel-centre coordinates (u, v), row-major (row v, then column u)."""
    v, u = np.mgrid[0:height, 0:width]
    return np.stack([u.ravel(), v.ravel()], axis=1).astype(np.float64)


def _rays(scene, frame, pixels):
    """Camera centre (3,) and world ray directions (P, 3) with camera-z component 1."""
    k = scene.intrinsics
    extrinsic = scene.extrinsics[frame]
    rot, trans = extrinsic[:3, :3], extrinsic[:3, 3]
    y_n = (pixels[:, 1] - k[1, 2]) / k[1, 1]
    x_n = (pixels[:, 0] - k[0, 2] - k[0, 1] * y_n) / k[0, 0]
    dirs_cam = np.stack([x_n, y_n, np.ones_like(x_n)], axis=1)
    return -rot.T @ trans, dirs_cam @ rot  # rows: R_e^T d_c


def box_corners(size):
    """(8, 3) corners of the box in object coordinates (origin at the bottom centre)."""
    length, height, width = size
    xs, ys, zs = np.meshgrid([-length / 2, length / 2], [-height, 0.0], [-width / 2, width / 2],
                             indexing="ij")
    return np.stack([xs.ravel(), ys.ravel(), zs.ravel()], axis=1)


def _candidate_rays(scene, frame, pixels, rotation, origin, size):
    """Indices of the rays that may hit the box: those inside the image rectangle spanned by
    its projected corners (+1 px), or all rays when a corner is not in front of the camera."""
    extrinsic = scene.extrinsics[frame]
    corners = (box_corners(size) @ rotation.T + origin) @ extrinsic[:3, :3].T + extrinsic[:3, 3]
    if np.any(corners[:, 2] <= 1e-3):
        return np.arange(len(pixels))
    k = scene.intrinsics
    u = k[0, 0] * corners[:, 0] / corners[:, 2] + k[0, 1] * corners[:, 1] / corners[:, 2] + k[0, 2]
    v = k[1, 1] * corners[:, 1] / corners[:, 2] + k[1, 2]
    inside = ((pixels[:, 0] >= u.min() - 1.0) & (pixels[:, 0] <= u.max() + 1.0)
              & (pixels[:, 1] >= v.min() - 1.0) & (pixels[:, 1] <= v.max() + 1.0))
    return np.flatnonzero(inside)


def _slab_hits(centre, dirs, rotation, origin, size):
    """Ray parameter s (= depth) of the first box hit per ray, inf where missed. (P,)"""
    length, height, width = size
    low = np.array([-length / 2, -height, -width / 2])
    high = np.array([length / 2, 0.0, width / 2])
    start = rotation.T @ (centre - origin)
    local = dirs @ rotation
    local = np.where(np.abs(local) < 1e-12, np.copysign(1e-12, local), local)
    s1, s2 = (low - start) / local, (high - start) / local
    near = np.minimum(s1, s2).max(axis=1)
    far = np.maximum(s1, s2).min(axis=1)
    return np.where((near <= far) & (near > 1e-9), near, np.inf)


def cast_rays(scene, frame, pixels, count_objects=False):
    """First surface hit by the rays through `pixels` in camera `frame`.

    Args:
        scene: Scene; frame: frame index.
        pixels: (P, 2) sub-pixel positions (u, v) in pixels (any, also outside the image).
        count_objects: also return, per object, how many rays hit it when occlusion by other
            surfaces is ignored (its unoccluded pixel count).
    Returns:
        dict: "depth" (P,) metres (z in camera `frame`), "surface" (P,) int64 (SURFACE_GROUND,
        SURFACE_FAR, or 2 + object index), "points" (P, 3) world hit points in metres, and
        "unoccluded" (N,) int64 when count_objects.
    """
    pixels = np.asarray(pixels, dtype=np.float64)
    centre, dirs = _rays(scene, frame, pixels)
    depth = np.full(len(pixels), np.inf)
    surface = np.full(len(pixels), SURFACE_FAR, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ground = np.where(dirs[:, 1] > 1e-12, (scene.camera_height - centre[1]) / dirs[:, 1],
                          np.inf)
        far = np.where(dirs[:, 2] > 1e-12, (scene.far_z - centre[2]) / dirs[:, 2], np.inf)
    depth = np.minimum(ground, far)
    surface[ground < far] = SURFACE_GROUND
    rotations, origins = scene.object_poses(frame)
    unoccluded = np.zeros(len(scene.objects), dtype=np.int64)
    for index, obj in enumerate(scene.objects):
        rays = _candidate_rays(scene, frame, pixels, rotations[index], origins[index], obj.size)
        if rays.size == 0:
            continue
        hits = _slab_hits(centre, dirs[rays], rotations[index], origins[index], obj.size)
        finite = np.isfinite(hits)
        unoccluded[index] = int(finite.sum())
        closer = finite & (hits < depth[rays])
        depth[rays[closer]] = hits[closer]
        surface[rays[closer]] = 2 + index
    result = {"depth": depth, "surface": surface, "points": centre + depth[:, None] * dirs}
    if count_objects:
        result["unoccluded"] = unoccluded
    return result


def _face_index(local, size):
    """Face of each local surface point: argmin of the distances to the planes
    (x = -l/2, x = l/2, y = -h, y = 0, z = -w/2, z = w/2). (P,) int."""
    length, height, width = size
    planes = np.array([-length / 2, length / 2, -height, 0.0, -width / 2, width / 2])
    coords = local[:, [0, 0, 1, 1, 2, 2]]
    return np.abs(coords - planes).argmin(axis=1)


def _ground_colour(scene, points):
    """Ground texture of world (x, z), blended into the far plane's colour at its foot
    (x, y = camera_height) over the last GROUND_BLEND_M metres before the far plane:
    c = (1 - s) c_ground + s c_far, s = smoothstep((z - far_z + GROUND_BLEND_M) / GROUND_BLEND_M).
    The two surfaces then meet without a colour edge, and the far ground (which perspective
    compresses most) varies slowly along z. (P, 3) grey levels."""
    ramp = np.clip((points[:, 2] - scene.far_z + GROUND_BLEND_M) / GROUND_BLEND_M, 0.0, 1.0)
    weight = (ramp * ramp * (3.0 - 2.0 * ramp))[:, None]
    colour = scene.ground_texture.colour(points[:, [0, 2]])
    near_wall = np.flatnonzero(ramp > 0.0)
    foot = np.stack([points[near_wall, 0], np.full(len(near_wall), scene.camera_height)], axis=1)
    colour[near_wall] += weight[near_wall] * (scene.far_texture.colour(foot) - colour[near_wall])
    return colour


def _shade(scene, frame, hits):
    """RGB grey levels (P, 3) float64 of the hit points (view-independent textures)."""
    points, surface = hits["points"], hits["surface"]
    colour = np.zeros((len(points), 3))
    ground = surface == SURFACE_GROUND
    colour[ground] = _ground_colour(scene, points[ground])
    far = surface == SURFACE_FAR
    colour[far] = scene.far_texture.colour(points[far][:, [0, 1]])
    rotations, origins = scene.object_poses(frame)
    for index, obj in enumerate(scene.objects):
        mask = surface == 2 + index
        if not mask.any():
            continue
        local = (points[mask] - origins[index]) @ rotations[index]  # rows: R_o^T (P - o)
        albedo = obj.face_albedo[_face_index(local, obj.size)]
        colour[mask] = obj.texture.base * albedo[:, None] + (
            obj.texture.colour(local) - obj.texture.base)
    return colour


def render_frame(scene, frame):
    """Render frame `frame` at the scene's image size.

    Returns:
        dict of (H, W) arrays unless noted: "depth" float64 metres; "surface" int64 (see
        cast_rays); "instance" int32 (track_id + 1, 0 = no object); "class_id" uint8 (index
        into scene.CATEGORIES: Road, Building, Car, Van); "rgb" (H, W, 3) uint8 RGB;
        "unoccluded" (N,) int64 per-object pixel counts ignoring occlusion.
    """
    height, width = scene.height, scene.width
    hits = cast_rays(scene, frame, pixel_coordinates(width, height), count_objects=True)
    rgb = np.clip(np.rint(_shade(scene, frame, hits)), 0, 255).astype(np.uint8)
    surface = hits["surface"]
    classes = np.array([CATEGORY_INDEX["Road"], CATEGORY_INDEX["Building"]]
                       + [CATEGORY_INDEX[obj.label] for obj in scene.objects], dtype=np.uint8)
    track_ids = np.array([0, 0] + [obj.track_id + 1 for obj in scene.objects], dtype=np.int32)
    shape = (height, width)
    return {
        "depth": hits["depth"].reshape(shape),
        "surface": surface.reshape(shape),
        "instance": track_ids[surface].reshape(shape),
        "class_id": classes[surface].reshape(shape),
        "rgb": rgb.reshape(shape + (3,)),
        "unoccluded": hits["unoccluded"],
    }
