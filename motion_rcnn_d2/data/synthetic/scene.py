"""Deterministic scene sampling for the synthetic world: camera trajectory, cars and vans.

World frame (metres): x right, y down, z forward, origin at frame 0's camera centre; the
ground is the plane y = camera_height, the far background the vertical plane z = far_z.
Camera t has the camera-to-world rotation R_wc = Ry(yaw_t) Rx(pitch_t) and centre c_t; its
extrinsic (world -> camera, as in Virtual KITTI 2's extrinsic.txt) is E_t = [R_e | t_e] with
R_e = R_wc^T and t_e = -R_e c_t. The camera drives forward along its heading
(sin yaw, 0, cos yaw), 0.4..1.4 m per frame (accelerating and braking), with small yaw and pitch
changes.

Objects are boxes of (length, height, width) standing on the ground. Object coordinates
(KITTI convention): origin at the bottom centre, x along the length (the heading), y down,
z along the width; the box is [-l/2, l/2] x [-h, 0] x [-w/2, w/2]. The object-to-world pose
is O_t = [Ry(yaw_t) | o_t] with o_t on the ground; a moving object turns by a constant yaw
rate and advances along its mid-step heading (cos, 0, -sin)(yaw_t + rate / 2).
Footprints are kept apart (bounding circles) at every frame, and from the camera path.
"""
from dataclasses import dataclass, field
from typing import List

import numpy as np
import torch

from ...geometry import rotation_x, rotation_y
from .textures import WaveTexture, sample_wave_texture

__all__ = [
    "CATEGORIES",
    "CATEGORY_INDEX",
    "SceneObject",
    "Scene",
    "intrinsics_for_size",
    "sample_scene",
    "sequence_rng",
]

# Virtual KITTI 2 categories and colours (colors.txt); a pixel's class id indexes this list.
CATEGORIES = (
    ("Terrain", (210, 0, 200)), ("Sky", (90, 200, 255)), ("Tree", (0, 199, 0)),
    ("Vegetation", (90, 240, 0)), ("Building", (140, 140, 140)), ("Road", (100, 60, 100)),
    ("GuardRail", (250, 100, 255)), ("TrafficSign", (255, 255, 0)),
    ("TrafficLight", (200, 200, 0)), ("Pole", (255, 130, 0)), ("Misc", (80, 80, 80)),
    ("Truck", (160, 60, 60)), ("Car", (255, 127, 80)), ("Van", (0, 139, 139)),
    ("Undefined", (0, 0, 0)),
)
CATEGORY_INDEX = {name: i for i, (name, _) in enumerate(CATEGORIES)}

# Virtual KITTI focal length at 1242 px width; K scales with the width.
VKITTI_FOCAL = 725.0
VKITTI_WIDTH = 1242.0

# Body colours (RGB grey levels) named as in Virtual KITTI 2's info.txt.
_BODY_COLOURS = {
    "Black": (58, 58, 62), "White": (205, 205, 198), "Silver": (165, 168, 175),
    "Red": (175, 45, 45), "Blue": (50, 75, 160), "Green": (55, 125, 70),
    "Yellow": (205, 175, 55), "Brown": (125, 85, 55),
}
# (label, model, (length, height, width) mean metres, half-range of the uniform jitter)
_SHAPES = {
    "Car": ("Sedan4Door", (4.2, 1.5, 1.8), (0.3, 0.1, 0.1)),
    "Van": ("Van", (5.0, 2.1, 2.0), (0.3, 0.1, 0.1)),
}


def _rot_y(angle):
    """Ry(angle) = [[c,0,s],[0,1,0],[-s,0,c]] as numpy (..., 3, 3) float64 (geometry's)."""
    return rotation_y(torch.as_tensor(angle, dtype=torch.float64)).numpy()


def _rot_x(angle):
    """Rx(angle) = [[1,0,0],[0,c,-s],[0,s,c]] as numpy (..., 3, 3) float64 (geometry's)."""
    return rotation_x(torch.as_tensor(angle, dtype=torch.float64)).numpy()


@dataclass
class SceneObject:
    """One car or van.

    Attributes:
        track_id: Virtual KITTI trackID (instance id in the PNGs = track_id + 1).
        label: "Car" or "Van"; model, colour_name: info.txt words.
        size: (length, height, width) metres.
        positions: (T, 3) world position of the bottom centre per frame (metres).
        yaws: (T,) rotation about the world y axis per frame (radians, KITTI rotation_y).
        texture: 3D WaveTexture in object coordinates; face_albedo: (6,) brightness factor
            per face, ordered (x-, x+, y- (top), y+ (bottom), z-, z+).
    """

    track_id: int
    label: str
    model: str
    colour_name: str
    size: np.ndarray
    positions: np.ndarray
    yaws: np.ndarray
    texture: WaveTexture
    face_albedo: np.ndarray

    def rotations(self):
        """(T, 3, 3) object-to-world rotations Ry(yaw_t)."""
        return _rot_y(self.yaws)

    def moving(self, frame):
        """Whether the pose changes between `frame` and `frame + 1` (isMoving)."""
        return bool(np.any(self.positions[frame + 1] != self.positions[frame])
                    or self.yaws[frame + 1] != self.yaws[frame])

    def footprint_radius(self):
        """Radius (m) of the bounding circle of the box's ground footprint."""
        return 0.5 * float(np.hypot(self.size[0], self.size[2]))


@dataclass
class Scene:
    """A sampled sequence.

    Attributes:
        width, height: image size (px); intrinsics: (3, 3) K.
        extrinsics: (T, 4, 4) world -> camera per frame.
        camera_height: metres above the ground (ground plane y = camera_height).
        far_z: world z of the far background plane (m).
        ground_texture: 2D texture of world (x, z); far_texture: 2D texture of world (x, y).
        objects: list of SceneObject.
    """

    width: int
    height: int
    intrinsics: np.ndarray
    extrinsics: np.ndarray
    camera_height: float
    far_z: float
    ground_texture: WaveTexture
    far_texture: WaveTexture
    objects: List[SceneObject] = field(default_factory=list)

    @property
    def num_frames(self):
        return int(self.extrinsics.shape[0])

    def object_poses(self, frame):
        """Object-to-world poses at `frame`: (rotations (N, 3, 3), origins (N, 3)) metres."""
        if not self.objects:
            return np.zeros((0, 3, 3)), np.zeros((0, 3))
        rotations = np.stack([obj.rotations()[frame] for obj in self.objects])
        origins = np.stack([obj.positions[frame] for obj in self.objects])
        return rotations, origins


def sequence_rng(seed, index):
    """The numpy Generator of sequence `index` of a world generated with `seed`."""
    return np.random.default_rng([int(seed), int(index)])


def intrinsics_for_size(width, height):
    """Virtual KITTI-like K: fx = fy = 725 * width / 1242, principal point at the image centre
    ((W - 1) / 2, (H - 1) / 2) with pixel centres at integer coordinates. Returns (3, 3)."""
    focal = VKITTI_FOCAL * width / VKITTI_WIDTH
    return np.array([[focal, 0.0, (width - 1) / 2.0], [0.0, focal, (height - 1) / 2.0],
                     [0.0, 0.0, 1.0]])


def _sample_camera(rng, num_frames):
    """Camera centres (T, 3) and extrinsics (T, 4, 4): forward speed starting at 0.5..1.2
    m/frame, then accelerating and braking (a random walk, N(0, 0.08) m/frame per frame, kept in
    0.4..1.4), yaw random walk (|yaw| <= 0.08 rad), pitch a slow oscillation of <= 0.03 rad in
    total. The speed varies within a sequence as much as between sequences, so that a model
    cannot tell the camera motion from which sequence (scene appearance) a pair comes from."""
    speed = rng.uniform(0.5, 1.2)
    yaw_rate = rng.uniform(-0.008, 0.008)
    yaw = np.empty(num_frames)
    yaw[0] = rng.uniform(-0.03, 0.03)
    for t in range(1, num_frames):
        yaw[t] = np.clip(yaw[t - 1] + yaw_rate + rng.normal(0.0, 0.002), -0.08, 0.08)
    period, phase = rng.uniform(8.0, 20.0), rng.uniform(0.0, 2.0 * np.pi)
    frames = np.arange(num_frames)
    pitch = rng.uniform(-0.015, 0.015) + rng.uniform(0.0, 0.012) * np.sin(
        2.0 * np.pi * frames / period + phase)
    steps = np.clip(speed + np.cumsum(rng.normal(0.0, 0.08, size=num_frames)), 0.4, 1.4)
    centres = np.zeros((num_frames, 3))
    for t in range(1, num_frames):
        heading = np.array([np.sin(yaw[t - 1]), 0.0, np.cos(yaw[t - 1])])
        centres[t] = centres[t - 1] + steps[t - 1] * heading
    rot_world_cam = _rot_y(yaw) @ _rot_x(pitch)
    extrinsics = np.tile(np.eye(4), (num_frames, 1, 1))
    extrinsics[:, :3, :3] = np.swapaxes(rot_world_cam, 1, 2)
    extrinsics[:, :3, 3] = -(extrinsics[:, :3, :3] @ centres[..., None])[..., 0]
    return centres, extrinsics


def _object_texture(rng, base):
    texture = sample_wave_texture(rng, base, [(1.0, 3.0)] * 3, amplitude=11.0, num_waves=4)
    return texture, rng.uniform(0.88, 1.1, size=6)


def _trajectory(rng, num_frames, position, yaw0, moving, start_now):
    """Positions (T, 3) and yaws (T,): still, or moving at 0.3..1.5 m/frame and a constant yaw
    rate from a start frame on (frame 0 when `start_now`, else frame 0 with probability 0.75;
    before it the object waits)."""
    positions = np.tile(position, (num_frames, 1))
    yaws = np.full(num_frames, yaw0)
    if not moving:
        return positions, yaws
    speed, rate = rng.uniform(0.3, 1.5), rng.uniform(-0.025, 0.025)
    start = 0 if (start_now or rng.random() < 0.75) else int(rng.integers(1, num_frames))
    for t in range(num_frames - 1):
        if t < start:
            positions[t + 1], yaws[t + 1] = positions[t], yaws[t]
            continue
        heading = yaws[t] + 0.5 * rate
        positions[t + 1] = positions[t] + speed * np.array([np.cos(heading), 0.0, -np.sin(heading)])
        yaws[t + 1] = yaws[t] + rate
    return positions, yaws


def _propose(rng, num_frames, camera_height, moving, start_now, placed):
    """A candidate object's (label, size, positions, yaws). Moving ones drive in lanes
    (x = -3.5 oncoming, 0 or 3.5 ahead); still ones are parked beside the road or, sometimes,
    behind an already placed object (to make occlusions)."""
    label = "Car" if rng.random() < 0.7 else "Van"
    _, mean, jitter = _SHAPES[label]
    size = np.asarray(mean) + rng.uniform(-1.0, 1.0, size=3) * np.asarray(jitter)
    if moving:
        lane = float(rng.choice([-3.5, 0.0, 3.5]))
        x, z = lane + rng.normal(0.0, 0.3), rng.uniform(8.0, 32.0)
        yaw0 = (np.pi / 2 if lane < 0 else -np.pi / 2) + rng.normal(0.0, 0.05)
    else:
        x, z = rng.choice([-1.0, 1.0]) * rng.uniform(4.5, 9.0), rng.uniform(6.0, 35.0)
        yaw0 = float(rng.choice([-1.0, 1.0])) * np.pi / 2 + rng.normal(0.0, 0.15)
        if rng.random() < 0.25:
            yaw0 = float(rng.choice([0.0, np.pi])) + rng.normal(0.0, 0.15)
    if placed and rng.random() < 0.35:  # line up behind an object already placed
        anchor = placed[int(rng.integers(len(placed)))].positions[0]
        x, z = anchor[0] + rng.uniform(-1.5, 1.5), anchor[2] + rng.uniform(6.0, 15.0)
    position = np.array([x, camera_height, z])
    positions, yaws = _trajectory(rng, num_frames, position, yaw0, moving, start_now)
    return label, size, positions, yaws


def _acceptable(scene, centres, positions, size, intrinsics):
    """Footprint clear of every placed object (+0.3 m) and of the camera path (+1.2 m) at every
    frame, in front of the far plane, and the box centre visible at frame 0 (Z > 3 m)."""
    radius = 0.5 * np.hypot(size[0], size[2])
    ground = positions[:, [0, 2]]
    if np.any(np.linalg.norm(ground - centres[:, [0, 2]], axis=1) < radius + 1.2):
        return False
    if np.any(positions[:, 2] + radius > scene.far_z - 2.0):
        return False
    for other in scene.objects:
        gap = np.linalg.norm(ground - other.positions[:, [0, 2]], axis=1)
        if np.any(gap < radius + other.footprint_radius() + 0.3):
            return False
    centre = positions[0] - np.array([0.0, size[1] / 2.0, 0.0])
    cam = scene.extrinsics[0, :3, :3] @ centre + scene.extrinsics[0, :3, 3]
    if cam[2] < 3.0:
        return False
    u = intrinsics[0, 0] * cam[0] / cam[2] + intrinsics[0, 2]
    return 0.0 <= u <= scene.width - 1


def sample_scene(rng, num_frames, width, height, min_objects=3, max_objects=7):
    """Sample one sequence: camera path, ground and far-plane textures, 3..7 cars/vans.

    The first object moves from frame 0, the second is still, the rest are random (about 60 %
    moving, some of them starting later). Candidates that collide are redrawn (at most 400
    draws in all, so the count can fall short of the target in crowded draws).

    Args:
        rng: numpy Generator (e.g. `sequence_rng(seed, index)`); the scene is a deterministic
            function of its state.
        num_frames: T >= 2; width, height: image size in pixels.
    Returns:
        Scene.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be >= 2 to make a frame pair, got {num_frames}")
    intrinsics = intrinsics_for_size(width, height)
    centres, extrinsics = _sample_camera(rng, num_frames)
    camera_height = rng.uniform(1.5, 1.7)
    far_z = centres[:, 2].max() + rng.uniform(40.0, 55.0)
    road = np.array([92.0, 90.0, 88.0]) + rng.uniform(-12.0, 12.0, size=3)
    ground = sample_wave_texture(rng, road, [(2.5, 8.0), (10.0, 40.0)], amplitude=10.0,
                                 num_waves=6)
    wall = np.array([150.0, 150.0, 158.0]) + rng.uniform(-25.0, 25.0, size=3)
    far = sample_wave_texture(rng, wall, [(8.0, 40.0), (6.0, 30.0)], amplitude=14.0, num_waves=6)
    scene = Scene(width, height, intrinsics, extrinsics, camera_height, far_z, ground, far)
    target = int(rng.integers(min_objects, max_objects + 1))
    for _ in range(400):
        if len(scene.objects) >= target:
            break
        index = len(scene.objects)
        moving = index == 0 or (index > 1 and bool(rng.random() < 0.6))
        label, size, positions, yaws = _propose(rng, num_frames, camera_height, moving,
                                                index == 0, scene.objects)
        if not _acceptable(scene, centres, positions, size, intrinsics):
            continue
        colour_name = str(rng.choice(sorted(_BODY_COLOURS)))
        texture, albedo = _object_texture(rng, _BODY_COLOURS[colour_name])
        scene.objects.append(SceneObject(index, label, _SHAPES[label][0], colour_name, size,
                                         positions, yaws, texture, albedo))
    return scene
