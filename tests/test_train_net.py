"""End to end: train_net.py trains the quick schedule on the tiny synthetic world, writes
checkpoints and evaluates (motion + COCO metrics); --eval-only reloads the final weights."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = "configs/quick_schedules/motion_rcnn_R18_C6_FPN_instant_test.yaml"


def _train_net(tmp_path, *args):
    env = dict(os.environ, MOTION_RCNN_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="2")
    out = subprocess.run(
        [sys.executable, "train_net.py", "--config-file", QUICK, *args,
         "OUTPUT_DIR", str(tmp_path / "out")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-6000:]
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def trained(module_tmp):
    return module_tmp, _train_net(module_tmp)


def test_quick_schedule_trains_checkpoints_and_evaluates(trained):
    tmp_path, log = trained
    out = tmp_path / "out"
    assert (out / "model_final.pth").is_file()
    assert (out / "model_0000019.pth").is_file()  # CHECKPOINT_PERIOD 20
    assert (out / "last_checkpoint").read_text().strip() == "model_final.pth"
    checkpoint = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["iteration"] == 39
    assert any(k.startswith("roi_heads.motion_head.") for k in checkpoint["model"])
    # every logged loss is finite
    events = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train_events = [e for e in events if "total_loss" in e]
    assert train_events and all(math.isfinite(e["total_loss"]) for e in train_events)
    assert max(e["iteration"] for e in train_events) == 39
    # the motion evaluator wrote its JSON, with counts next to the means
    metrics = json.loads((out / "inference" / "synthetic_tiny_val" / "motion_metrics.json")
                         .read_text())
    flat = json.dumps(metrics)
    for key in ("AEE", "Fl_all", "E_t_cam", "AEE_count", "num_images"):
        assert f'"{key}' in flat, key
    assert "bbox/AP" in log or "Evaluation results for bbox" in log


def test_eval_only_reloads_the_final_weights(trained):
    tmp_path, _ = trained
    log = _train_net(tmp_path, "--eval-only", "MODEL.WEIGHTS",
                     str(tmp_path / "out" / "model_final.pth"))
    assert "Evaluation results for bbox" in log
    assert "AEE" in log


def test_eval_only_on_a_data_set_registered_on_the_command_line(trained):
    """--register NAME=ROOT makes any world in the Virtual KITTI 2 layout an evaluation set."""
    tmp_path, _ = trained
    root = tmp_path / "datasets" / "synthetic_tiny"  # 2 sequences x 5 pairs, all of them
    _train_net(tmp_path, "--eval-only", "--register", f"other_world={root}",
               "MODEL.WEIGHTS", str(tmp_path / "out" / "model_final.pth"),
               "DATASETS.TEST", "('other_world',)")
    metrics = json.loads((tmp_path / "out" / "inference" / "other_world" / "motion_metrics.json")
                         .read_text())
    assert metrics["motion"]["num_images"] == 10
