"""The synthetic world as a data set: generated into the data root on first use, then read by
the Virtual KITTI 2 loader (the world is written in that layout; see data/synthetic/).

The world is written into a temporary sibling folder and renamed into place when complete,
so an interrupted generation is never mistaken for a world, and concurrent processes (several
data-loader workers or GPUs) end up with one complete copy.
"""
import logging
import os
import shutil
import tempfile

from .vkitti2 import load_vkitti2

__all__ = ["SYNTHETIC_WORLD", "ensure_synthetic_world", "load_synthetic"]

logger = logging.getLogger(__name__)

# The built-in world: 200 sequences x 5 frames = 800 pairs at 512x160 (seed 0), about a minute
# to render on 2 CPU cores on first use. Many short sequences rather than few long ones: more
# scenes, camera speeds and objects for the same number of pairs (a motion head fitted on
# 40 x 11 frames generalised worse to unseen sequences); 200 rather than 100 sequences raised
# box AP on unseen worlds by 1-3 points (README "Results").
SYNTHETIC_WORLD = {"sequences": 200, "frames": 5, "width": 512, "height": 160, "seed": 0}


def ensure_synthetic_world(root, **world):
    """Generate the synthetic world into ``root`` unless ``root`` exists; returns ``root``.

    Args:
        root: target folder (it will hold SceneNN/clone/...).
        world: generate_world arguments overriding SYNTHETIC_WORLD (sequences, frames, width,
            height, seed).
    """
    if os.path.isdir(root):
        return root
    from ..synthetic import generate_world  # imported on first use only: rendering is heavy

    params = dict(SYNTHETIC_WORLD, **world)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    logger.info("Generating the synthetic world %s into '%s' (first use).", params, root)
    tmp = tempfile.mkdtemp(prefix=".synthetic-", dir=parent)
    try:
        generate_world(tmp, **params)
        try:
            os.rename(tmp, root)
        except OSError:
            if not os.path.isdir(root):  # not another process's finished world: a real failure
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def load_synthetic(root, classes=("Car", "Van"), min_visible_pixels=50, dataset_name="synthetic",
                   **world):
    """All pairs of the synthetic world under ``root`` (generated first when absent)."""
    ensure_synthetic_world(root, **world)
    return load_vkitti2(root, "clone", classes, min_visible_pixels, dataset_name)
