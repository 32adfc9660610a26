"""Registration: built-in names, lazy loading, the data root from the environment, the split,
the synthetic world generated on first use, register_motion_dataset."""
import os
import random

import pytest

import motion_rcnn_d2  # first: installs the Detectron2 compatibility layer
from detectron2.data import DatasetCatalog, MetadataCatalog
from motion_rcnn_d2.data import MotionDatasetMapper, register_motion_dataset
from motion_rcnn_d2.data.datasets import load_vkitti2, synthetic
from motion_rcnn_d2.data.synthetic import generate_world

BUILTIN = ["vkitti2_clone_train", "vkitti2_clone_val", "vkitti1_clone_train", "vkitti1_clone_val",
           "synthetic_train", "synthetic_val", "kitti2015_train"]


@pytest.fixture(scope="module")
def world(module_tmp):
    root = module_tmp / "synthetic"
    generate_world(root, sequences=2, frames=5, width=48, height=24, seed=1, progress=False)
    return str(root)


@pytest.fixture
def fresh_name():
    names = []

    def make(name):
        names.append(name)
        return name

    yield make
    for name in names:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)


def test_builtin_names_and_metadata():
    assert motion_rcnn_d2.data.MotionDatasetMapper is MotionDatasetMapper
    for name in BUILTIN:
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.thing_classes == ["Car", "Van"] and meta.evaluator_type == "motion"


def test_registration_is_lazy_and_missing_root_is_named(tmp_path, fresh_name, monkeypatch):
    missing = str(tmp_path / "nowhere")
    register_motion_dataset(fresh_name("my_missing_set"), missing)  # reads nothing
    assert not os.path.exists(missing)
    with pytest.raises(FileNotFoundError, match=f"'my_missing_set'.*{missing}"):
        DatasetCatalog.get("my_missing_set")
    monkeypatch.setenv("MOTION_RCNN_DATASETS", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'vkitti1_clone_val'.*vkitti1"):
        DatasetCatalog.get("vkitti1_clone_val")


def test_user_split_is_the_thesis_split(world, fresh_name):
    everything = load_vkitti2(world, min_visible_pixels=1)
    order = list(range(len(everything)))
    random.Random(0).shuffle(order)
    register_motion_dataset(fresh_name("user_val"), world, split="val", num_val=3,
                            min_visible_pixels=1)
    register_motion_dataset(fresh_name("user_train"), world, split="train", num_val=3,
                            min_visible_pixels=1)
    val, train = DatasetCatalog.get("user_val"), DatasetCatalog.get("user_train")
    assert [d["image_id"] for d in val] == [everything[i]["image_id"] for i in order[:3]]
    assert [d["image_id"] for d in train] == [everything[i]["image_id"] for i in order[3:]]
    with pytest.raises(ValueError, match="already registered"):
        register_motion_dataset("user_val", world)


def _as_default_world(monkeypatch):
    """Make the `world` fixture's arguments those of the built-in synthetic world."""
    for key, value in dict(sequences=2, frames=5, width=48, height=24, seed=1).items():
        monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, key, value)


def test_builtin_synthetic_from_env_root(world, monkeypatch):
    _as_default_world(monkeypatch)
    monkeypatch.setenv("MOTION_RCNN_DATASETS", os.path.dirname(world))
    val, train = DatasetCatalog.get("synthetic_val"), DatasetCatalog.get("synthetic_train")
    assert len(val) == 2 and len(train) == 6  # 8 pairs, 20 % for validation
    assert {d["image_id"] for d in val}.isdisjoint(d["image_id"] for d in train)
    assert all(d["file_name"].startswith(world) for d in val + train)


def test_synthetic_world_generated_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, "sequences", 1)
    monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, "frames", 6)
    monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, "width", 32)
    monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, "height", 16)
    monkeypatch.setenv("MOTION_RCNN_DATASETS", str(tmp_path))
    val = DatasetCatalog.get("synthetic_val")
    assert len(val) == 1 and len(DatasetCatalog.get("synthetic_train")) == 4
    assert os.path.isdir(tmp_path / "synthetic" / "Scene01" / "clone" / "frames")
    assert [p for p in os.listdir(tmp_path) if p != "synthetic"] == []  # no temporary left
    assert synthetic.ensure_synthetic_world(str(tmp_path / "synthetic"))  # world.json matches


def test_a_world_of_other_arguments_or_version_is_refused(world, monkeypatch):
    from motion_rcnn_d2.data.synthetic import GENERATOR_VERSION, read_world_description

    assert read_world_description(world) == {
        "generator_version": GENERATOR_VERSION, "sequences": 2, "frames": 5, "width": 48,
        "height": 24, "seed": 1, "variant": "clone"}
    _as_default_world(monkeypatch)
    assert synthetic.ensure_synthetic_world(world) == world  # the same world: used as it is
    monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, "sequences", 3)
    with pytest.raises(RuntimeError, match=f"'{world}' holds the world .*'sequences': 2.*"
                                           r"'sequences': 3.*Delete the folder"):
        synthetic.ensure_synthetic_world(world)
    monkeypatch.setitem(synthetic.SYNTHETIC_WORLD, "sequences", 2)
    monkeypatch.setattr("motion_rcnn_d2.data.synthetic.world.GENERATOR_VERSION",
                        GENERATOR_VERSION + 1)
    with pytest.raises(RuntimeError, match="'generator_version': 1.*'generator_version': 2"):
        synthetic.ensure_synthetic_world(world)
    old = os.path.dirname(world) + "/old_world"
    os.makedirs(old + "/Scene01/clone")  # a world from before world.json
    with pytest.raises(RuntimeError, match="no world.json .*older version"):
        synthetic.ensure_synthetic_world(old)


def test_split_sizes():
    from motion_rcnn_d2.data.datasets.common import split_pairs

    pairs = [{"image_id": str(i)} for i in range(10)]
    assert len(split_pairs(pairs, "val", 0.2)) == 2 and len(split_pairs(pairs, "train", 0.2)) == 8
    assert split_pairs(pairs, None, 3) == pairs
    with pytest.raises(ValueError, match="Cannot split 10 pairs with 10"):
        split_pairs(pairs, "train", 10)


def test_synthetic_test_is_a_world_of_its_own(tmp_path, monkeypatch):
    """synthetic_test: every pair of another world (own folder and seed), none of synthetic's."""
    from motion_rcnn_d2.data.datasets.builtin import SYNTHETIC_WORLDS

    world = dict(SYNTHETIC_WORLDS["synthetic_test"], sequences=2, frames=3, width=32, height=16)
    monkeypatch.setitem(SYNTHETIC_WORLDS, "synthetic_test", world)
    monkeypatch.setenv("MOTION_RCNN_DATASETS", str(tmp_path))
    test = DatasetCatalog.get("synthetic_test")
    assert len(test) == 4  # 2 sequences x 2 pairs, no split
    assert all(d["file_name"].startswith(str(tmp_path / "synthetic_test")) for d in test)
    assert world["seed"] != synthetic.SYNTHETIC_WORLD["seed"]


def test_register_from_arguments(world, fresh_name):
    from motion_rcnn_d2.data import register_from_arguments

    name = fresh_name("cli_world")
    register_from_arguments([f"{name}={world}"])
    register_from_arguments([f"{name}={world}"])  # the same again (another launch worker): kept
    assert len(DatasetCatalog.get(name)) == 8  # all pairs
    with pytest.raises(ValueError, match="already registered"):
        register_from_arguments([f"{name}={os.path.dirname(world)}"])
    with pytest.raises(ValueError, match="expected NAME=ROOT"):
        register_from_arguments([world])
    with pytest.raises(FileNotFoundError, match="no folder"):
        register_from_arguments([f"{fresh_name('nowhere')}={world}_missing"])
