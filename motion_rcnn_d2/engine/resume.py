"""A training data stream that ``--resume`` continues exactly where the interrupted run was.

Detectron2's training loader restarts its sampler's index stream from the beginning when a run
is resumed, and the random augmentations and the model's random proposal/RoI sampling continue
from whatever state the fresh process seeded. :class:`ResumableTrainLoader` makes iteration i
of a run a function of (seed, rank, i) only:

- before reading batch i it seeds Python's, NumPy's and torch's global RNGs with
  ``step_seed(seed, rank, i, 0)``, which the mapper's augmentations draw from (with
  DATALOADER.NUM_WORKERS 0 the mapper runs in the training process); after reading it, with
  ``step_seed(seed, rank, i, 1)``, which the model's random proposal/RoI sampling in that
  iteration draws from (whatever the loader itself drew, e.g. the DataLoaders' worker seeds
  when their iterators start);
- its ``state_dict()`` ({"seed", "batches"}) is saved with every checkpoint (train_net.py
  registers it with the checkpointer), and ``load_state_dict()`` makes its
  :class:`ResumableTrainingSampler` skip the indices this rank already consumed.

So a run killed after a checkpoint and resumed with ``--resume`` ends with the weights of an
uninterrupted run (with the optimizer and LR scheduler states that the checkpoint restores).
Exact when DATALOADER.NUM_WORKERS is 0 (worker processes seed their augmentations once, when
they start) and every image falls into one aspect-ratio group (all landscape, as in the
driving data sets) or DATALOADER.ASPECT_RATIO_GROUPING is False; otherwise the data order still
continues, the augmentations and batch composition may differ from the uninterrupted run.
"""
import itertools
import random

import numpy as np
import torch
from detectron2.data import build_detection_train_loader, get_detection_dataset_dicts
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

__all__ = ["ResumableTrainingSampler", "ResumableTrainLoader", "build_resumable_train_loader",
           "step_seed"]


def step_seed(seed, rank, step, phase):
    """The 32-bit seed of training iteration ``step`` on process ``rank``, ``phase`` 0 (data)
    or 1 (model): NumPy's SeedSequence of the four integers, i.e. distinct, well-mixed streams
    for every combination."""
    entropy = [int(seed), int(rank), int(step), int(phase)]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _seed_global_rngs(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class ResumableTrainingSampler(TrainingSampler):
    """Detectron2's :class:`TrainingSampler` (infinite shuffled index stream, sharded by rank)
    whose stream starts after the first ``start`` indices of this rank."""

    def __init__(self, size, shuffle=True, seed=None):
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = 0

    @property
    def seed(self):
        return self._seed

    @seed.setter
    def seed(self, value):
        self._seed = int(value)  # TrainingSampler's stream is a function of its _seed

    def __iter__(self):
        yield from itertools.islice(super().__iter__(), self.start, None)


class ResumableTrainLoader:
    """Iterable over batches of a training DataLoader, reseeding the global RNGs before and
    after reading each batch and counting the batches it handed out (module docstring)."""

    def __init__(self, loader, sampler, batch_size_per_rank, seed):
        """
        Args:
            loader: Detectron2's train DataLoader (lists of mapped dicts) built over `sampler`.
            sampler: its ResumableTrainingSampler.
            batch_size_per_rank: dicts per batch on this process (SOLVER.IMS_PER_BATCH / world).
            seed: base seed, the same on every process (cfg.SEED, or a shared random seed).
        """
        self.loader = loader
        self.sampler = sampler
        self.batch_size_per_rank = int(batch_size_per_rank)
        self.seed = int(seed)
        self.batches = 0
        self._started = False

    def __iter__(self):
        self._started = True
        iterator = None
        rank = comm.get_rank()
        while True:
            _seed_global_rngs(step_seed(self.seed, rank, self.batches, 0))
            if iterator is None:
                iterator = iter(self.loader)
            batch = next(iterator)
            _seed_global_rngs(step_seed(self.seed, rank, self.batches, 1))
            self.batches += 1
            yield batch

    def state_dict(self):
        """{"seed": base seed, "batches": batches handed out so far}."""
        return {"seed": self.seed, "batches": self.batches}

    def load_state_dict(self, state):
        """Continue after ``state["batches"]`` batches (call before the first batch)."""
        if self._started:
            raise RuntimeError("ResumableTrainLoader.load_state_dict: the data stream has already "
                               "started; load the checkpoint before training starts.")
        self.seed = int(state["seed"])
        self.batches = int(state["batches"])
        self.sampler.seed = self.seed
        self.sampler.start = self.batches * self.batch_size_per_rank


def build_resumable_train_loader(cfg, mapper):
    """Detectron2's training loader of ``cfg`` with ``mapper``, as a :class:`ResumableTrainLoader`.

    The sampler's seed (and the base of the per-iteration seeds) is cfg.SEED, or a random seed
    shared by all processes when cfg.SEED < 0 (restored from the checkpoint on resume). With
    DATALOADER.SAMPLER_TRAIN other than "TrainingSampler" Detectron2's loader is returned as it is
    (not resumable exactly).
    """
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        return build_detection_train_loader(cfg, mapper=mapper)
    dataset = get_detection_dataset_dicts(
        cfg.DATASETS.TRAIN, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS)
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    sampler = ResumableTrainingSampler(len(dataset), seed=seed)
    loader = build_detection_train_loader(cfg, dataset=dataset, mapper=mapper, sampler=sampler)
    world_size = comm.get_world_size()
    return ResumableTrainLoader(loader, sampler, cfg.SOLVER.IMS_PER_BATCH // world_size, seed)
