"""DIAGNOSTICS: HeadStatsHook's activation and gradient statistics (engine/head_stats.py)."""
from types import SimpleNamespace

import pytest
import torch
from detectron2.utils.events import EventStorage
from torch import nn

from motion_rcnn_d2.engine.head_stats import HeadStatsHook


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(2, 2)
        self.head = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))


def test_statistics_of_a_known_layer():
    model = _Model()
    with torch.no_grad():
        model.head[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        model.head[0].bias.zero_()
    hook = HeadStatsHook(model, ["head"], period=2)
    hook.trainer = SimpleNamespace(iter=1, max_iter=10)
    x = torch.tensor([[1.0, -1.0], [2.0, 1.0]])  # head.0 outputs [[1, -1, 0], [2, 1, -3]]
    with EventStorage(0) as storage:
        hook.trainer.storage = storage
        model.head(model.backbone(x) * 0 + x).sum().backward()
        hook.after_step()
        latest = {k: v for k, (v, _) in storage.latest().items()}
    assert latest["diag/head.0/active"] == pytest.approx(3 / 6)  # 1, 2, 1 are > 0
    assert latest["diag/head.0/dead"] == pytest.approx(1 / 3)  # unit 3 is off for both inputs
    stds = torch.tensor([[1.0, -1.0, 0.0], [2.0, 1.0, -3.0]]).std(dim=0)
    assert latest["diag/head.0/batch_std"] == pytest.approx(float(stds.mean()), rel=1e-5)
    grads = [p.grad.pow(2).sum() for p in model.head[0].parameters()]
    assert latest["diag/head.0/grad_norm"] == pytest.approx(float(sum(grads).sqrt()), rel=1e-5)
    total = [p.grad.pow(2).sum() for p in model.parameters()]
    assert latest["diag/grad_norm_total"] == pytest.approx(float(sum(total).sqrt()), rel=1e-5)
    assert "diag/head.2/active" in latest and "diag/backbone/active" not in latest


def test_off_period_records_nothing_and_unknown_modules_are_named():
    model = _Model()
    hook = HeadStatsHook(model, ["head"], period=5)
    hook.trainer = SimpleNamespace(iter=1, max_iter=10)
    with EventStorage(0) as storage:
        hook.trainer.storage = storage
        model.head(torch.ones(2, 2)).sum().backward()
        hook.after_step()
        assert not any(k.startswith("diag/") for k in storage.latest())
    with pytest.raises(ValueError, match="DIAGNOSTICS.MODULES.*'camera_head'"):
        HeadStatsHook(model, ["camera_head"], period=5)
