"""Ground truth of a frame pair t -> t+1: motions from poses, flow and its validity.

1. Depth is quantised first, exactly as the depth PNG stores it (uint16 centimetres,
   d_q = round(100 d) / 100), so that the flow is exact for the WRITTEN depth.
2. Camera and object motions come from the poses (docs/method.md section 5, see motion.py); a
   still object gets R = I, t = 0 exactly and keeps its pivot.
3. flow = geometry.compose_flow_indexed(d_q, K, instance index, motions, camera motion)
   (docs/method.md section 4), in float64.
4. Validity from the t+1 scene: the moved point P'' must project inside the image
   (0 <= u'' <= W - 1, 0 <= v'' <= H - 1) and be what camera t+1 sees there. The ray through
   (u'', v'') is cast exactly in the t+1 scene; it must hit the same surface (ground, far
   plane or the same object) at a depth within 3 cm + 1 % of Z''. The tolerance absorbs the
   1 cm depth quantisation: P lies up to e = 5 mm (in depth) off the surface along its ray, so
   the t+1 ray meets the surface about e cos(theta_t) / cos(theta_t+1) from P'' (theta: angle
   between ray and surface normal), a few millimetres unless the surface turns grazing at t+1.
   Occluders of another surface are rejected by the surface test, and occluding parts of the
   same box (its other faces) are more than the tolerance nearer except at its edges.
"""
import numpy as np
import torch

from ...geometry import compose_flow_indexed, scene_flow
from .motion import camera_motion, object_motion_from_world_poses
from .render import cast_rays, pixel_coordinates

__all__ = ["quantise_depth", "pair_motions", "pair_ground_truth"]

DEPTH_SCALE = 100.0  # depth PNG units per metre (centimetres)
_UINT16_MAX = 65535
VISIBILITY_TOLERANCE_M = 0.03  # absolute part of the depth tolerance (m)
VISIBILITY_TOLERANCE_REL = 0.01  # relative part (fraction of Z'')


def quantise_depth(depth):
    """Depth as read back from the depth PNG: d_q = round(100 d) / 100 metres, 0 where the PNG
    value is 0 or 65535 (d <= 0, non-finite, or >= 655.35 m). (H, W) float64."""
    depth = np.asarray(depth, dtype=np.float64)
    finite = np.isfinite(depth) & (depth > 0)
    raw = np.clip(np.round(np.where(finite, depth, 0.0) * DEPTH_SCALE), 0, _UINT16_MAX)
    raw[~finite | (raw >= _UINT16_MAX)] = 0
    return raw / DEPTH_SCALE


def pair_motions(scene, frame):
    """Ground-truth motions of the pair (frame, frame + 1).

    Returns:
        dict: "camera_rotation" (3, 3), "camera_translation" (3,) metres, "rotations"
        (N, 3, 3), "translations" (N, 3) metres, "pivots" (N, 3) metres (camera `frame`),
        "moving" (N,) bool (pose changes); still objects have R = I and t = 0 exactly.
    """
    cam_rot, cam_trans = camera_motion(scene.extrinsics[frame], scene.extrinsics[frame + 1])
    rot_t, origin_t = scene.object_poses(frame)
    rot_t1, origin_t1 = scene.object_poses(frame + 1)
    rotations, translations, pivots = object_motion_from_world_poses(
        scene.extrinsics[frame], rot_t, origin_t, rot_t1, origin_t1)
    moving = np.array([obj.moving(frame) for obj in scene.objects], dtype=bool)
    rotations[~moving] = np.eye(3)
    translations[~moving] = 0.0
    return {"camera_rotation": cam_rot, "camera_translation": cam_trans, "rotations": rotations,
            "translations": translations, "pivots": pivots, "moving": moving}


def _as_batch(array):
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float64))[None]


def pair_ground_truth(scene, frame, render_t):
    """Flow ground truth of the pair (frame, frame + 1).

    Args:
        scene: Scene; frame: t (0 <= t < T - 1).
        render_t: render_frame(scene, t) (its "depth", "surface", "instance" are used).
    Returns:
        pair_motions(...) plus "depth" (H, W) quantised depth (metres), "flow" (H, W, 2) float64
        pixels (u, v), "valid" (H, W) bool.
    """
    height, width = scene.height, scene.width
    motions = pair_motions(scene, frame)
    depth = quantise_depth(render_t["depth"])
    instance = render_t["instance"].astype(np.int64) - 1  # -1 = background, else object index
    depth_t = _as_batch(depth)[None]
    k = _as_batch(scene.intrinsics)
    args = (_as_batch(motions["rotations"]), _as_batch(motions["translations"]),
            _as_batch(motions["pivots"]))
    camera = dict(camera_rotation=_as_batch(motions["camera_rotation"]),
                  camera_translation=_as_batch(motions["camera_translation"]))
    flow, in_front = compose_flow_indexed(depth_t, k, torch.from_numpy(instance)[None], *args,
                                          **camera)
    masks = torch.from_numpy(
        instance[None] == np.arange(len(scene.objects))[:, None, None]).to(torch.float64)[None]
    delta, _ = scene_flow(depth_t, k, masks, *args, **camera)
    flow = flow[0].permute(1, 2, 0).numpy()
    z_moved = (depth + delta[0, 2].numpy()).ravel()

    target = pixel_coordinates(width, height) + flow.reshape(-1, 2)
    candidates = np.flatnonzero(
        in_front[0].numpy().ravel() & (target[:, 0] >= 0) & (target[:, 0] <= width - 1)
        & (target[:, 1] >= 0) & (target[:, 1] <= height - 1))
    hits = cast_rays(scene, frame + 1, target[candidates])
    z_cand = z_moved[candidates]
    seen = (hits["surface"] == render_t["surface"].ravel()[candidates]) & (
        np.abs(hits["depth"] - z_cand)
        <= VISIBILITY_TOLERANCE_M + VISIBILITY_TOLERANCE_REL * z_cand)
    valid = np.zeros(height * width, dtype=bool)
    valid[candidates[seen]] = True
    valid = valid.reshape(height, width)
    flow = np.where(valid[..., None], flow, 0.0)
    return dict(motions, depth=depth, flow=flow, valid=valid)
