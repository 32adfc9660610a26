"""generate_world: sample, render and write a whole synthetic world (Virtual KITTI 2 layout)."""
import os

from tqdm import tqdm

from .groundtruth import pair_ground_truth
from .render import render_frame
from .scene import sample_scene, sequence_rng
from .writer import SequenceWriter

__all__ = ["generate_world", "sequence_name", "generate_sequence"]


def sequence_name(index):
    """Folder name of sequence `index` (0-based): Scene01, Scene02, ..."""
    return f"Scene{index + 1:02d}"


def generate_sequence(scene, root, progress_bar=None):
    """Render `scene` and write it under `root` (= <out>/SceneNN/<variant>).

    Each frame is rendered once; frame t's render also serves the pair (t, t+1), whose ground
    truth (groundtruth.pair_ground_truth) gives the flow file and the isMoving flags.
    """
    writer = SequenceWriter(root, scene)
    moving = None
    for frame in range(scene.num_frames):
        render = render_frame(scene, frame)
        if frame + 1 < scene.num_frames:
            truth = pair_ground_truth(scene, frame, render)
            moving = truth["moving"]
            writer.write_flow(frame, truth["flow"], truth["valid"])
        writer.write_frame(frame, render, moving)
        if progress_bar is not None:
            progress_bar.update(1)
    writer.close()


def _check_positive(name, value, minimum):
    if int(value) != value or value < minimum:
        raise ValueError(f"generate_world: {name} must be an integer >= {minimum}, got {value!r}")


def generate_world(out_dir, sequences=5, frames=20, width=512, height=160, seed=0,
                   variant="clone", progress=True):
    """Generate a synthetic world: `sequences` sequences of `frames` frames at width x height.

    Sequence i is sampled with numpy's Generator seeded by (seed, i) (scene.sequence_rng), so
    the same arguments give the same bytes (on the same platform). Existing files are
    overwritten. The far background stands 40..55 m beyond the camera's last position, so very
    long sequences (hundreds of frames) start with it far away, where the depth PNG's range
    (655.35 m) ends.

    Args:
        out_dir: output root; sequence i goes to <out_dir>/Scene%02d/<variant> (i + 1).
        sequences: number of sequences (>= 1); frames: frames per sequence (>= 2).
        width, height: image size in pixels (>= 16 and >= 8).
        seed: integer seed; variant: Virtual KITTI variant folder name (e.g. "clone").
        progress: show a tqdm progress bar over all frames.
    Returns:
        list of the sequence roots (<out_dir>/SceneNN/<variant>), in order.
    """
    _check_positive("sequences", sequences, 1)
    _check_positive("frames", frames, 2)
    _check_positive("width", width, 16)
    _check_positive("height", height, 8)
    if not variant or os.sep in variant:
        raise ValueError(f"generate_world: variant must be a folder name such as 'clone', got "
                         f"{variant!r}")
    roots = []
    with tqdm(total=sequences * frames, desc="synthetic world", unit="frame",
              disable=not progress) as bar:
        for index in range(sequences):
            scene = sample_scene(sequence_rng(seed, index), frames, width, height)
            root = os.path.join(os.fspath(out_dir), sequence_name(index), variant)
            generate_sequence(scene, root, bar)
            roots.append(root)
    return roots
