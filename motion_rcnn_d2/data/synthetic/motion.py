"""Ground-truth rigid motions from poses (docs/method.md section 5), numpy float64.

Conventions (docs/method.md): object k moves a point of camera t as
P' = R_k (P - p_k) + p_k + t_k; the camera then maps it into camera t+1 as
P'' = R_cam P' + t_cam.

From world poses (extrinsic E_t = [R_e,t | t_e,t] world -> camera, object pose
O_k,t = [R_o,t | o_t] object -> world):
    R_cam = R_e,t+1 R_e,t^T,            t_cam = t_e,t+1 - R_cam t_e,t
    R_k = R_e,t R_o,t+1 R_o,t^T R_e,t^T, p_k = E_t o_t,   t_k = E_t o_t+1 - p_k.
From camera-space poses (Virtual KITTI 2 pose.txt camera columns: rotation R^c_t and
position c_t of the object in camera t):
    R_k = R_cam^T R^c_t+1 R^c_t^T,   p_k = c_t,   t_k = R_cam^T (c_t+1 - t_cam) - c_t.
Derivation: object coordinates X map to camera t as R^c_t X + c_t and to camera t+1 as
R^c_t+1 X + c_t+1 = R_cam P' + t_cam; eliminating X gives the line above.
"""
import numpy as np

__all__ = [
    "camera_motion",
    "object_motion_from_world_poses",
    "object_motion_from_camera_poses",
    "matrix_to_euler_angles",
]


def camera_motion(extrinsic_t, extrinsic_t1):
    """Camera motion between two world -> camera extrinsics.

    Args:
        extrinsic_t, extrinsic_t1: (4, 4) (or (3, 4)) [R_e | t_e], metres.
    Returns:
        rotation (3, 3) R_cam = R_e,t+1 R_e,t^T; translation (3,) metres
        t_cam = t_e,t+1 - R_cam t_e,t (so that P_t+1 = R_cam P_t + t_cam for a static point).
    """
    rot_t, trans_t = extrinsic_t[:3, :3], extrinsic_t[:3, 3]
    rot_t1, trans_t1 = extrinsic_t1[:3, :3], extrinsic_t1[:3, 3]
    rotation = rot_t1 @ rot_t.T
    return rotation, trans_t1 - rotation @ trans_t


def object_motion_from_world_poses(extrinsic_t, rotation_t, origin_t, rotation_t1, origin_t1):
    """Object motions in camera-t coordinates from object -> world poses at t and t+1.

    Args:
        extrinsic_t: (4, 4) world -> camera t.
        rotation_t, rotation_t1: (N, 3, 3) object -> world rotations R_o.
        origin_t, origin_t1: (N, 3) object origins o in world metres.
    Returns:
        rotations (N, 3, 3) R_k = R_e R_o,t+1 R_o,t^T R_e^T; translations (N, 3)
        t_k = E_t o_t+1 - p_k; pivots (N, 3) p_k = E_t o_t (metres, camera t).
    """
    rot_e, trans_e = extrinsic_t[:3, :3], extrinsic_t[:3, 3]
    rotations = rot_e @ rotation_t1 @ np.swapaxes(rotation_t, -1, -2) @ rot_e.T
    pivots = origin_t @ rot_e.T + trans_e
    translations = origin_t1 @ rot_e.T + trans_e - pivots
    return rotations, translations, pivots


def object_motion_from_camera_poses(camera_rotation, camera_translation, rotation_t, position_t,
                                    rotation_t1, position_t1):
    """Object motions in camera-t coordinates from camera-space object poses.

    Args:
        camera_rotation: (3, 3) R_cam; camera_translation: (3,) t_cam metres.
        rotation_t, rotation_t1: (N, 3, 3) object -> camera rotations R^c at t and t+1.
        position_t, position_t1: (N, 3) object origins in camera t and camera t+1 (metres).
    Returns:
        rotations (N, 3, 3) R_k = R_cam^T R^c_t+1 R^c_t^T; translations (N, 3)
        t_k = R_cam^T (c_t+1 - t_cam) - c_t; pivots (N, 3) p_k = c_t.
    """
    rotations = camera_rotation.T @ rotation_t1 @ np.swapaxes(rotation_t, -1, -2)
    translations = (position_t1 - camera_translation) @ camera_rotation - position_t
    return rotations, translations, np.array(position_t, dtype=np.float64)


def matrix_to_euler_angles(rotation):
    """Inverse of geometry.euler_angles_to_matrix for |alpha| < 90 deg, any beta and gamma.

    R = Rz(gamma) Rx(alpha) Ry(beta) has R[2, 1] = sin(alpha), (R[2, 0], R[2, 2]) =
    cos(alpha) (-sin(beta), cos(beta)) and (R[0, 1], R[1, 1]) = cos(alpha) (-sin(gamma),
    cos(gamma)), so alpha = asin(R21), beta = atan2(-R20, R22), gamma = atan2(-R01, R11).

    Args:
        rotation: (..., 3, 3).
    Returns:
        (..., 3) radians (alpha about x, beta about y, gamma about z), beta and gamma in
        (-pi, pi]. Virtual KITTI's (ry, rx, rz) columns are (beta, alpha, gamma).
    """
    rotation = np.asarray(rotation, dtype=np.float64)
    alpha = np.arcsin(np.clip(rotation[..., 2, 1], -1.0, 1.0))
    beta = np.arctan2(-rotation[..., 2, 0], rotation[..., 2, 2])
    gamma = np.arctan2(-rotation[..., 0, 1], rotation[..., 1, 1])
    return np.stack([alpha, beta, gamma], axis=-1)
