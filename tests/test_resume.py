"""Resume: a train_net.py run killed (SIGKILL) after a checkpoint and restarted with --resume ends
with the weights, optimizer and LR-scheduler state of an uninterrupted run; checkpoints are
written atomically, so a failing save leaves the previous checkpoint and last_checkpoint intact.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from motion_rcnn_d2.data.datasets import ensure_synthetic_world
from motion_rcnn_d2.data.datasets.builtin import SYNTHETIC_WORLDS
from motion_rcnn_d2.engine import MotionCheckpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "configs/quick_schedules/motion_rcnn_R18_C6_FPN_instant_test.yaml"
MAX_ITER, PERIOD = 6, 2  # checkpoints after iterations 1 and 3, model_final after 5
TINY = [  # the quick schedule, shrunk like motion_rcnn_inputs.tiny_cfg; no evaluation
    "SOLVER.MAX_ITER", str(MAX_ITER), "SOLVER.CHECKPOINT_PERIOD", str(PERIOD),
    "SOLVER.WARMUP_ITERS", "4", "DATASETS.TEST", "()", "MODEL.FPN.OUT_CHANNELS", "32",
    "MODEL.RESNETS.C6_NUM_BLOCKS", "1", "MODEL.RPN.PRE_NMS_TOPK_TRAIN", "200",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN", "40", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM", "64", "MODEL.ROI_MASK_HEAD.CONV_DIM", "16",
    "MODEL.ROI_MASK_HEAD.NUM_CONV", "1", "MODEL.ROI_MOTION_HEAD.FC_DIM", "64",
    "MODEL.CAMERA_MOTION_HEAD.CONV_DIM", "32", "MODEL.CAMERA_MOTION_HEAD.FC_DIM", "64",
]


def _command(output_dir, *args):
    return [sys.executable, "train_net.py", "--config-file", QUICK, *args, "OUTPUT_DIR",
            str(output_dir), *TINY]


@pytest.fixture(scope="module")
def runs(module_tmp):
    """(uninterrupted output dir, resumed output dir, the resumed run's log)."""
    root = module_tmp
    datasets = root / "datasets"
    ensure_synthetic_world(str(datasets / "synthetic_tiny"), **SYNTHETIC_WORLDS["synthetic_tiny"])
    env = dict(os.environ, MOTION_RCNN_DATASETS=str(datasets), OMP_NUM_THREADS="2")

    def run(*args):
        out = subprocess.run(_command(*args), cwd=REPO, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
        return out.stdout + out.stderr

    run(root / "full")
    for path in (root / "full").glob("model_0*.pth"):  # only its model_final is compared
        path.unlink()

    killed = root / "killed"
    proc = subprocess.Popen(_command(killed), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    tag = killed / "last_checkpoint"
    deadline = time.time() + 300
    while not (tag.is_file() and tag.read_text().strip()) and proc.poll() is None:
        assert time.time() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL  # killed mid-run, not finished
    assert not (killed / "model_final.pth").exists()
    last = tag.read_text().strip()
    log = run(killed, "--resume")
    return root / "full", killed, last, log


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_killed_run_resumes_from_its_last_checkpoint(runs):
    _, killed, last, log = runs
    iteration = int(re.fullmatch(r"model_(\d+)\.pth", last).group(1))
    assert iteration < MAX_ITER - 1
    assert _load(killed / last)["iteration"] == iteration
    assert f"Starting training from iteration {iteration + 1}" in log


def _optimizer_state(trainer_state):
    """Detectron2 0.6 (our Trainer adds it) or later (DefaultTrainer keeps it under _trainer)."""
    return trainer_state.get("optimizer") or trainer_state["_trainer"]["optimizer"]


def test_resumed_run_ends_with_the_uninterrupted_state(runs):
    full, killed, _, _ = runs
    a, b = _load(full / "model_final.pth"), _load(killed / "model_final.pth")
    assert a["iteration"] == b["iteration"] == MAX_ITER - 1
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-5, atol=1e-7,
                                   msg=key)
    # optimizer (AdamW in the quick schedule): every state tensor (moments, step) and the
    # learning rate of every parameter group
    opt_a, opt_b = (_optimizer_state(x["trainer"]) for x in (a, b))
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    assert opt_a["state"].keys() == opt_b["state"].keys() and opt_a["state"]
    for key, state in opt_a["state"].items():
        assert state.keys() == opt_b["state"][key].keys() and {"exp_avg", "step"} <= set(state)
        for name, value in state.items():
            torch.testing.assert_close(opt_b["state"][key][name], value, rtol=1e-5, atol=1e-7)
    assert a["trainer"]["hooks"] == b["trainer"]["hooks"]  # LR scheduler state
    assert a["train_loader"] == b["train_loader"] == {"seed": 0, "batches": MAX_ITER}
    # the last logged learning rate (warm-up ends at iteration 4) is the same
    lrs = [[json.loads(line).get("lr") for line in (d / "metrics.json").read_text().splitlines()]
           for d in (full, killed)]
    assert lrs[0][-1] == lrs[1][-1] is not None


# ---------------------------------------------------------------------- atomic saves
def _checkpointer(tmp_path):
    model = nn.Linear(3, 2)
    return model, MotionCheckpointer(model, str(tmp_path), save_to_disk=True)


def _partial_save(data, f, *args, **kwargs):
    f.write(b"PK\x03\x04 half a checkpoint")  # what a process killed mid-write leaves
    raise OSError("disk full (simulated)")


def test_failing_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_0000001", iteration=1)
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", _partial_save)
    for name in ("model_0000001", "model_0000002"):  # overwriting it, and a new one
        with pytest.raises(OSError, match="disk full"):
            checkpointer.save(name, iteration=2)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000001.pth"]  # no .tmp
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    fresh, reader = _checkpointer(tmp_path)
    extra = reader.resume_or_load("", resume=True)
    assert extra["iteration"] == 1
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, saved[key])


def test_failing_tag_keeps_the_previous_last_checkpoint(tmp_path, monkeypatch):
    _, checkpointer = _checkpointer(tmp_path)
    checkpointer.save("model_0000001")
    real_replace = os.replace

    def replace(src, dst):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("killed while tagging (simulated)")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="tagging"):
        checkpointer.save("model_0000002")
    monkeypatch.undo()
    # the new checkpoint is complete, but the tag still names the previous complete one
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000001.pth"
    assert _load(tmp_path / "model_0000002.pth")["model"].keys() == {"weight", "bias"}
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_resume_reads_checkpoints_weights_only(tmp_path, monkeypatch):
    model, checkpointer = _checkpointer(tmp_path)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    checkpointer.checkpointables["optimizer"] = optimizer
    checkpointer.save("model_0000003", iteration=3)
    calls = []
    real_load = torch.load

    def load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    fresh = nn.Linear(3, 2)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    reader = MotionCheckpointer(fresh, str(tmp_path), optimizer=fresh_optimizer)
    assert reader.resume_or_load("", resume=True)["iteration"] == 3
    assert calls == [True]
    assert torch.equal(fresh_optimizer.state_dict()["state"][0]["momentum_buffer"],
                       optimizer.state_dict()["state"][0]["momentum_buffer"])
