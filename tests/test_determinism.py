"""Determinism on the CPU: the same cfg.SEED gives the same model, the same first-iteration
losses and the same training batches (order and augmentations).

The same seed giving the same synthetic-world bytes is tested in
tests/test_synthetic.py::test_same_seed_same_bytes_other_seed_other_bytes; a resumed run ending
with an uninterrupted run's weights in tests/test_resume.py.
"""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.env import seed_all_rng

from motion_rcnn_d2.data import MotionDatasetMapper, register_motion_dataset
from motion_rcnn_d2.data.synthetic import generate_world
from motion_rcnn_d2.engine import build_resumable_train_loader
from motion_rcnn_inputs import make_input, tiny_cfg, train_step

DATASET = "determinism_world"


def first_step_losses(seed):
    """Seed as train_net does (default_setup: cfg.SEED), build, one training step."""
    cfg = tiny_cfg()
    cfg.SEED = seed
    seed_all_rng(cfg.SEED)
    model = build_model(cfg)
    losses = train_step(model, [make_input(48, 64, seed=0), make_input(48, 64, seed=1)])
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return {k: v.detach() for k, v in losses.items()}, grads


def test_same_seed_same_first_iteration_losses():
    losses_a, grads_a = first_step_losses(7)
    losses_b, grads_b = first_step_losses(7)
    assert losses_a.keys() == losses_b.keys() and len(losses_a) >= 10
    for key in losses_a:
        assert torch.equal(losses_a[key], losses_b[key]), key
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
    losses_c, _ = first_step_losses(8)  # another seed: other weights, other losses
    assert any(not torch.equal(losses_a[k], losses_c[k]) for k in losses_a)


@pytest.fixture(scope="module")
def world(module_tmp):
    root = module_tmp
    generate_world(root, sequences=1, frames=6, width=128, height=48, seed=0, progress=False)
    register_motion_dataset(DATASET, str(root), min_visible_pixels=1)
    return root


def first_batches(seed, steps=3):
    cfg = tiny_cfg()
    cfg.SEED = seed
    cfg.DATASETS.TRAIN = (DATASET,)
    cfg.INPUT.MIN_SIZE_TRAIN = (32, 48, 64)  # random scale and random flip
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    cfg.SOLVER.IMS_PER_BATCH = 2
    torch.manual_seed(1000 + seed)  # whatever state the process is in: it must not matter
    loader = build_resumable_train_loader(cfg, MotionDatasetMapper(cfg, is_train=True))
    batches = []
    for step, batch in enumerate(loader):
        batches.append([(d["image_id"], d["image"], d["intrinsics"]) for d in batch])
        batches[-1].append(torch.rand(3))  # what the model's sampling would draw next
        if step + 1 == steps:
            return batches


def test_same_seed_same_training_batches(world):
    a, b, other = first_batches(0), first_batches(0), first_batches(1)
    for batch_a, batch_b in zip(a, b):
        assert torch.equal(batch_a[-1], batch_b[-1])
        for (id_a, image_a, k_a), (id_b, image_b, k_b) in zip(batch_a[:-1], batch_b[:-1]):
            assert id_a == id_b and torch.equal(image_a, image_b) and torch.equal(k_a, k_b)

    def signature(batches):  # pair order, sizes and flips
        return [(d[0], tuple(d[1].shape), d[1].float().sum().item()) for x in batches
                for d in x[:-1]]

    assert signature(a) != signature(other)  # another seed: another stream
