"""The synthetic world: procedural driving scenes rendered exactly by ray casting, with exact
ground truth (depth, instances, classes, camera and object motions, flow) written in the
Virtual KITTI 2 layout (see writer.py). Entry point: `generate_world`."""
from .groundtruth import pair_ground_truth, pair_motions, quantise_depth
from .motion import (
    camera_motion,
    matrix_to_euler_angles,
    object_motion_from_camera_poses,
    object_motion_from_world_poses,
)
from .render import cast_rays, render_frame
from .scene import CATEGORIES, Scene, SceneObject, intrinsics_for_size, sample_scene, sequence_rng
from .world import (
    GENERATOR_VERSION,
    generate_sequence,
    generate_world,
    read_world_description,
    sequence_name,
    world_description,
)

__all__ = [
    "CATEGORIES",
    "Scene",
    "SceneObject",
    "camera_motion",
    "cast_rays",
    "generate_sequence",
    "generate_world",
    "GENERATOR_VERSION",
    "read_world_description",
    "world_description",
    "intrinsics_for_size",
    "matrix_to_euler_angles",
    "object_motion_from_camera_poses",
    "object_motion_from_world_poses",
    "pair_ground_truth",
    "pair_motions",
    "quantise_depth",
    "render_frame",
    "sample_scene",
    "sequence_name",
    "sequence_rng",
]
