"""Registration of the motion data sets in Detectron2's DatasetCatalog / MetadataCatalog.

Built-in names, each resolved (when first loaded, not at import) under the data root from the
environment variable ``MOTION_RCNN_DATASETS`` (default ``datasets``):

=========================================  =====================  ============================================
name                                       folder under the root  content
=========================================  =====================  ============================================
vkitti2_clone_train / vkitti2_clone_val    ``vkitti2/``           Virtual KITTI 2, clone, 5 scenes
vkitti1_clone_train / vkitti1_clone_val    ``vkitti1/``           Virtual KITTI 1.3.1, clone
synthetic_train / synthetic_val            ``synthetic/``         the synthetic world (generated on first use)
synthetic_test                             ``synthetic_test/``    held-out world: unseen sequences, own seed
synthetic_tiny_train / synthetic_tiny_val  ``synthetic_tiny/``    a tiny synthetic world (quick schedules)
kitti2015_train                            ``kitti2015/``         KITTI 2015 scene flow training
=========================================  =====================  ============================================

Split (the thesis, docs/method.md section 7): all consecutive pairs, shuffled with
random.Random(0); the first 100 are validation, the rest training. The synthetic world (a few
hundred pairs) uses the first 20 % for validation instead; since neighbouring frames of the same
sequences then sit on both sides of that split, ``synthetic_test`` (sequences generated with
another seed, never trained on) measures generalisation. KITTI 2015 is one set of 200 pairs.

Classes are Car and Van (``thing_classes``); ``evaluator_type`` is "motion". Registering reads
nothing from disk; the catalog function builds the list when first called.
"""
import os

from detectron2.data import DatasetCatalog, MetadataCatalog

from .common import split_pairs
from .kitti2015 import load_kitti2015
from .synthetic import ensure_synthetic_world, load_synthetic
from .vkitti1 import load_vkitti1
from .vkitti2 import load_vkitti2

__all__ = ["register_motion_dataset", "register_kitti2015", "register_all_motion_datasets",
           "datasets_root",
           "prepare_datasets", "register_from_arguments",
           "DEFAULT_CLASSES", "THESIS_NUM_VAL", "SYNTHETIC_VAL_FRACTION"]

DATASETS_ENV = "MOTION_RCNN_DATASETS"
DEFAULT_CLASSES = ("Car", "Van")
THESIS_NUM_VAL = 100
SYNTHETIC_VAL_FRACTION = 0.2
DEFAULT_MIN_VISIBLE_PIXELS = 50


def datasets_root():
    """The data root: $MOTION_RCNN_DATASETS, or "datasets" (relative to the working folder)."""
    return os.path.expanduser(os.environ.get(DATASETS_ENV, "datasets"))


def _register(name, load, classes, **metadata):
    if name in DatasetCatalog.list():
        raise ValueError(
            f"Data set '{name}' is already registered; choose another name or call "
            f"DatasetCatalog.remove('{name}') and MetadataCatalog.remove('{name}') first."
        )
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(thing_classes=list(classes), evaluator_type="motion", **metadata)


def register_motion_dataset(name, root, variant="clone", split=None, classes=DEFAULT_CLASSES,
                            min_visible_pixels=DEFAULT_MIN_VISIBLE_PIXELS, num_val=THESIS_NUM_VAL,
                            seed=0):
    """Register your own data in the Virtual KITTI 2 layout (see ``vkitti2.py``) as ``name``.

    Args:
        name: the DatasetCatalog name (use it in cfg.DATASETS.TRAIN / TEST).
        root: folder holding ``SceneNN/<variant>/...`` (any scene folder names).
        variant: the sub-folder of each scene ("clone", "fog", ...).
        split: None (all pairs), "train" or "val" (pairs shuffled with random.Random(seed),
            the first ``num_val`` (int, or a float share in (0, 1)) are "val").
        classes: info.txt labels kept, in the order of the category ids.
        min_visible_pixels: an object needs at least this many pixels in its frame-t mask.
    Nothing is read until the data set is first used.
    """
    classes = tuple(classes)

    def load():
        dicts = load_vkitti2(root, variant, classes, min_visible_pixels, dataset_name=name)
        return split_pairs(dicts, split, num_val, seed)

    _register(name, load, classes, dataset_root=root, split=split)


def register_kitti2015(name, root, split="training", disparity_dir=None, disparity_next_dir=None,
                       classes=DEFAULT_CLASSES):
    """Register a copy of KITTI 2015 scene flow (see ``kitti2015.py``) as ``name``.

    Args:
        root: the folder holding ``training/`` and ``testing/``.
        split: "training" (GT flow, disparities and obj_map: `KittiSceneFlowEvaluator` runs on
            it) or "testing".
        disparity_dir: the disparities for the depth of frame t (``%06d_10.png``, KITTI 16-bit;
            relative to ``root/<split>`` or absolute), e.g. a stereo method's output; default
            ``disp_occ_0`` (GT, sparse) on the training set.
        disparity_next_dir: disparities of frame t+1 in its own view (``%06d_11.png``), or None.
    """
    def load():
        return load_kitti2015(root, classes, name, split, disparity_dir, disparity_next_dir)

    _register(name, load, classes, dataset_root=root, split=split,
              kitti_scene_flow=split == "training")


def _builtin_loader(name, kind, split):
    def load():
        root = os.path.join(datasets_root(), kind)
        if kind == "vkitti2":
            dicts = load_vkitti2(root, "clone", DEFAULT_CLASSES, DEFAULT_MIN_VISIBLE_PIXELS, name)
        elif kind == "vkitti1":
            dicts = load_vkitti1(root, "clone", DEFAULT_CLASSES, 0.1, name)
        elif kind in SYNTHETIC_WORLDS:
            dicts = load_synthetic(root, DEFAULT_CLASSES, DEFAULT_MIN_VISIBLE_PIXELS, name,
                                   **SYNTHETIC_WORLDS[kind])
            return split_pairs(dicts, split, SYNTHETIC_VAL_FRACTION) if split else dicts
        else:
            return load_kitti2015(root, DEFAULT_CLASSES, name)
        return split_pairs(dicts, split, THESIS_NUM_VAL)

    return load


# Synthetic worlds by folder: the default one, a held-out test world (16 unseen sequences x 6
# frames = 80 pairs, its own seed) and a tiny one (2 sequences x 6 frames at 256x80, seconds to
# generate) for quick schedules and tests.
SYNTHETIC_WORLDS = {
    "synthetic": {},
    "synthetic_test": {"sequences": 16, "frames": 6, "seed": 1000},
    "synthetic_tiny": {"sequences": 2, "frames": 6, "width": 256, "height": 80},
}

_BUILTIN = {
    "vkitti2_clone_train": ("vkitti2", "train"),
    "vkitti2_clone_val": ("vkitti2", "val"),
    "vkitti1_clone_train": ("vkitti1", "train"),
    "vkitti1_clone_val": ("vkitti1", "val"),
    "synthetic_train": ("synthetic", "train"),
    "synthetic_val": ("synthetic", "val"),
    "synthetic_test": ("synthetic_test", None),
    "synthetic_tiny_train": ("synthetic_tiny", "train"),
    "synthetic_tiny_val": ("synthetic_tiny", "val"),
    "kitti2015_train": ("kitti2015", None),
}


def register_all_motion_datasets():
    """Register the built-in names (idempotent: names already registered are left alone)."""
    registered = set(DatasetCatalog.list())
    for name, (kind, split) in _BUILTIN.items():
        if name not in registered:
            _register(name, _builtin_loader(name, kind, split), DEFAULT_CLASSES, split=split,
                      dataset_folder=kind, kitti_scene_flow=kind == "kitti2015")


def prepare_datasets(names):
    """Generate the synthetic worlds of the data sets ``names`` before any loader runs.

    Only the main process generates (with a progress bar); the others wait for it, so several
    processes of a ``launch`` never render the same world at once.
    """
    from detectron2.utils import comm

    folders = {MetadataCatalog.get(n).get("dataset_folder", None) for n in names}
    if comm.is_main_process():
        for folder in sorted(folders & set(SYNTHETIC_WORLDS)):
            ensure_synthetic_world(os.path.join(datasets_root(), folder),
                                   **SYNTHETIC_WORLDS[folder])
    comm.synchronize()


def register_from_arguments(specs):
    """Register data sets given as ``NAME=ROOT`` strings (``train_net.py --register``).

    Each ROOT is a folder in the Virtual KITTI 2 layout (e.g. a world written by
    ``tools/generate_synthetic.py``), registered whole (all pairs) under NAME with
    :func:`register_motion_dataset`. A name registered already (e.g. by an earlier call in the
    same process) is left as it is when it points to the same ROOT.
    """
    for spec in specs or ():
        name, sep, root = spec.partition("=")
        if not sep or not name or not root:
            raise ValueError(f"--register {spec!r}: expected NAME=ROOT, e.g. "
                             "--register my_world=datasets/my_world")
        if not os.path.isdir(root):
            raise FileNotFoundError(f"--register {spec!r}: no folder '{root}' (a data set in "
                                    "the Virtual KITTI 2 layout, e.g. from "
                                    "tools/generate_synthetic.py)")
        if name in DatasetCatalog.list() and MetadataCatalog.get(name).get(
                "dataset_root", None) == root:
            continue
        register_motion_dataset(name, root)
