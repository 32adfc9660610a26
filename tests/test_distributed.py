"""Data-parallel training on the CPU: train_net's Trainer in 2 gloo processes started by
motion_rcnn_d2.engine.launch, the model wrapped by Detectron2's create_ddp_model.

One run of 4 iterations on the tiny synthetic world (1 pair per process and iteration; at
iteration 1 rank 1's pair and at iteration 2 both pairs have their instances removed, i.e. no
foreground) checks: the parameters are bit-identical on both ranks after every step and change
every step (DDP without find_unused_parameters would fail the step after a parameter went
unused); the ranks read different pairs, together one epoch; the distributed evaluation
(MotionEvaluator + COCO via build_motion_evaluators) of the final weights equals a
single-process evaluation of the same weights. And `train_net.py --num-gpus 2` runs on the CPU.
"""
import math
import os
import subprocess
import sys
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

import motion_rcnn_d2  # noqa: F401  (first: compat for detectron2; also in spawned workers)
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import HookBase
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng

from motion_rcnn_d2.data.datasets import ensure_synthetic_world
from motion_rcnn_d2.data.datasets.builtin import SYNTHETIC_WORLDS
from motion_rcnn_d2.engine import MotionCheckpointer, launch
from motion_rcnn_inputs import tiny_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train_net  # noqa: E402

MAX_ITER = 4
EMPTY = {1: {1}, 2: {0, 1}}  # iteration -> ranks whose pair gets no instances


def make_cfg(output_dir):
    cfg = tiny_cfg()
    cfg.DATASETS.TRAIN = ("synthetic_tiny_train",)
    cfg.DATASETS.TEST = ("synthetic_tiny_val",)
    cfg.INPUT.MIN_SIZE_TRAIN = (80,)
    cfg.INPUT.MAX_SIZE_TRAIN = 256
    cfg.INPUT.MIN_SIZE_TEST = 80
    cfg.INPUT.MAX_SIZE_TEST = 256
    cfg.MODEL.RESNETS.NORM = "GN"  # trained from scratch, as configs/synthetic
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 10.0
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.005
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.MAX_ITER = MAX_ITER
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.EVAL_PERIOD = 0
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0  # detections (and instance metrics) after 4 steps
    cfg.SEED = 0
    cfg.OUTPUT_DIR = output_dir
    return cfg


class _Recording:
    """The training batches, their image ids recorded; some pairs' instances removed."""

    def __init__(self, loader):
        self.loader = loader
        self.image_ids = []

    def __iter__(self):
        for step, batch in enumerate(self.loader):
            if comm.get_rank() in EMPTY.get(step, ()):
                for d in batch:
                    d["instances"] = d["instances"][:0]
            self.image_ids.append([d["image_id"] for d in batch])
            yield batch


class _CompareParameters(HookBase):
    """After each step: are this rank's parameters equal to rank 0's, and did they change."""

    def __init__(self):
        self.records = []
        self._previous = None

    def after_step(self):
        params = [p.detach() for p in self.trainer.model.parameters()]
        equal = True
        for p in params:
            reference = p.clone()
            dist.broadcast(reference, src=0)
            equal &= torch.equal(reference, p)
        changed = self._previous is not None and any(
            not torch.equal(a, b) for a, b in zip(self._previous, params))
        self._previous = [p.clone() for p in params]
        self.records.append({"equal": equal, "changed": changed})


class _Trainer(train_net.Trainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return _Recording(super().build_train_loader(cfg))

    def build_hooks(self):
        self.compare = _CompareParameters()
        return super().build_hooks() + [self.compare]


def _worker(output_dir):
    cfg = make_cfg(output_dir)
    train_cfg = cfg.clone()
    train_cfg.DATASETS.TEST = ()  # evaluated below, once
    seed_all_rng(cfg.SEED + comm.get_rank())  # as default_setup: each rank its own init...
    trainer = _Trainer(train_cfg)  # ...rank 0's weights are broadcast when DDP wraps the model
    trainer.resume_or_load(resume=False)
    trainer.train()
    results = train_net.Trainer.test(cfg, trainer.model)  # the DDP model, data split by rank
    torch.save({"ddp": type(trainer.model).__name__, "steps": trainer.compare.records,
                "image_ids": trainer.data_loader.image_ids,
                "results": results if comm.is_main_process() else None},
               os.path.join(output_dir, f"rank{comm.get_rank()}.pt"))


@pytest.fixture(scope="module")
def distributed_run(module_tmp):
    root = module_tmp
    old = os.environ.get("MOTION_RCNN_DATASETS")
    os.environ["MOTION_RCNN_DATASETS"] = str(root / "datasets")  # inherited by the workers
    try:
        ensure_synthetic_world(str(root / "datasets" / "synthetic_tiny"),
                               **SYNTHETIC_WORLDS["synthetic_tiny"])
        out = root / "out"
        out.mkdir()
        launch(_worker, 2, dist_url="auto", args=(str(out),), device="cpu",
               timeout=timedelta(minutes=3))
        runs = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
        yield out, runs
    finally:
        if old is None:
            os.environ.pop("MOTION_RCNN_DATASETS")
        else:
            os.environ["MOTION_RCNN_DATASETS"] = old
        # the COCO json converted for this process's evaluation belongs to this tmp world
        MetadataCatalog.get("synthetic_tiny_val").__dict__.pop("json_file", None)


def test_parameters_identical_on_both_ranks_after_every_step(distributed_run):
    _, runs = distributed_run
    assert [r["ddp"] for r in runs] == ["DistributedDataParallel"] * 2
    for run in runs:
        assert len(run["steps"]) == MAX_ITER
        assert all(step["equal"] for step in run["steps"])
        # every step updated the weights (not a vacuous equality), also the steps without
        # foreground on one or both ranks, and the step after them ran (no unused parameter)
        assert all(step["changed"] for step in run["steps"][1:])


def test_each_rank_reads_different_pairs_together_one_epoch(distributed_run):
    _, runs = distributed_run
    ids0, ids1 = runs[0]["image_ids"], runs[1]["image_ids"]
    assert len(ids0) == len(ids1) == MAX_ITER
    assert all(len(b) == 1 for b in ids0 + ids1)  # IMS_PER_BATCH 2 over 2 processes
    train_ids = {d["image_id"] for d in DatasetCatalog.get("synthetic_tiny_train")
                 if d["annotations"]}
    seen = [b[0] for b in ids0 + ids1]
    assert len(train_ids) >= 2 * MAX_ITER  # the tiny world has enough pairs for this test
    assert len(set(seen)) == 2 * MAX_ITER and set(seen) <= train_ids  # no pair read twice


def _flatten(results, prefix=""):
    for key, value in results.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def test_distributed_evaluation_equals_single_process(distributed_run):
    out, runs = distributed_run
    distributed = dict(_flatten(runs[0]["results"]))
    assert runs[1]["results"] is None
    cfg = make_cfg(str(out / "single"))
    model = train_net.Trainer.build_model(cfg)
    MotionCheckpointer.from_config(cfg, model).load(str(out / "model_final.pth"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each gloo process: the same float summation order
    try:
        single = dict(_flatten(train_net.Trainer.test(cfg, model)))
    finally:
        torch.set_num_threads(threads)
    assert set(single) == set(distributed)
    assert "motion/num_images" in single and single["motion/num_images"] == 2  # both val pairs
    assert any(k.startswith("bbox/") for k in single)
    assert single["motion/num_detections"] > 0  # instances were compared too
    finite = 0
    for key, value in single.items():
        other = distributed[key]
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(other), key
        else:
            assert other == pytest.approx(value, rel=1e-5, abs=1e-6), key
            finite += 1
    assert finite >= 10  # flow, camera and detection metrics were compared, not only nans


def test_train_net_num_gpus_2_on_cpu(distributed_run, tmp_path):
    """The command line: `train_net.py --num-gpus 2` with MODEL.DEVICE cpu trains in 2 gloo
    processes (Detectron2's own launch would assert CUDA)."""
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")  # MOTION_RCNN_DATASETS: the fixture's world
    tiny = ["MODEL.FPN.OUT_CHANNELS", "32", "MODEL.RESNETS.C6_NUM_BLOCKS", "1",
            "MODEL.RPN.POST_NMS_TOPK_TRAIN", "40", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
            "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
            "MODEL.ROI_MOTION_HEAD.FC_DIM", "64", "MODEL.CAMERA_MOTION_HEAD.CONV_DIM", "32",
            "MODEL.CAMERA_MOTION_HEAD.FC_DIM", "64"]
    result = subprocess.run(
        [sys.executable, "train_net.py", "--num-gpus", "2", "--dist-url", "auto",
         "--config-file", "configs/quick_schedules/motion_rcnn_R18_C6_FPN_instant_test.yaml",
         "SOLVER.MAX_ITER", "2", "DATASETS.TEST", "()", "OUTPUT_DIR", str(out), *tiny],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    assert "World size: 2" in log
    final = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert final["iteration"] == 1 and final["train_loader"]["batches"] == 2
