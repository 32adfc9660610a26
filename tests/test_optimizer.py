"""SOLVER.OPTIMIZER and the heads' LR_FACTOR (engine/optimizer.py)."""
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.solver import build_lr_scheduler
from torch import nn

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.engine.optimizer import build_motion_optimizer


class _Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.camera_head = nn.Sequential(nn.Linear(4, 2), nn.GroupNorm(1, 2))
        self.roi_heads = nn.Module()
        self.roi_heads.box_head = nn.Linear(4, 4)
        self.roi_heads.motion_head = nn.Linear(4, 2)


def _cfg(**solver):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.SOLVER.BASE_LR = 0.1
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def _lrs(optimizer, model):
    """lr of each named parameter of the model."""
    by_id = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    return {name: by_id[id(p)] for name, p in model.named_parameters()}


@pytest.mark.parametrize("name, kind", [("SGD", torch.optim.SGD), ("AdamW", torch.optim.AdamW)])
def test_optimizer_kind_and_heads_lr_factors(name, kind):
    model = _Model()
    cfg = _cfg(OPTIMIZER=name)
    cfg.MODEL.CAMERA_MOTION_HEAD.LR_FACTOR = 0.25
    cfg.MODEL.ROI_MOTION_HEAD.LR_FACTOR = 3.0
    optimizer = build_motion_optimizer(cfg, model)
    assert isinstance(optimizer, kind)
    lrs = _lrs(optimizer, model)
    assert lrs["backbone.weight"] == lrs["backbone.bias"] == pytest.approx(0.1)
    assert all(lrs[n] == pytest.approx(0.025) for n in lrs if n.startswith("camera_head."))
    assert lrs["roi_heads.motion_head.weight"] == lrs["roi_heads.motion_head.bias"]
    assert lrs["roi_heads.motion_head.weight"] == pytest.approx(0.3)
    assert lrs["roi_heads.box_head.weight"] == pytest.approx(0.1)
    # every parameter exactly once; norms keep their own weight decay
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(model.camera_head[1].weight)] == 0.0
    assert decay[id(model.camera_head[0].weight)] == cfg.SOLVER.WEIGHT_DECAY
    # Detectron2's schedule scales every group by the same multiplier
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.STEPS = (1,)
    scheduler = build_lr_scheduler(cfg, optimizer)
    optimizer.step()
    scheduler.step()
    lrs = _lrs(optimizer, model)
    assert lrs["backbone.weight"] == pytest.approx(0.01)
    assert lrs["camera_head.0.weight"] == pytest.approx(0.0025)
    assert lrs["roi_heads.motion_head.weight"] == pytest.approx(0.03)


def test_default_is_detectron2_sgd_and_unknown_names_are_refused():
    model = _Model()
    optimizer = build_motion_optimizer(_cfg(), model)
    assert isinstance(optimizer, torch.optim.SGD)
    assert len({g["lr"] for g in optimizer.param_groups}) == 1
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER = 'Adagrad'"):
        build_motion_optimizer(_cfg(OPTIMIZER="Adagrad"), model)


def test_adamw_is_fused_and_updates_as_the_reference_loop():
    torch.manual_seed(0)
    model = _Model()
    reference = _Model()
    reference.load_state_dict(model.state_dict())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = _cfg(OPTIMIZER="AdamW", BASE_LR=0.01, WEIGHT_DECAY=0.05)
    optimizer = build_motion_optimizer(cfg, model)
    assert all(group["fused"] for group in optimizer.param_groups)
    # the same parameter groups, stepped by PyTorch's per-tensor loop
    by_name = dict(reference.named_parameters())
    names = {id(p): n for n, p in model.named_parameters()}
    loop = torch.optim.AdamW(
        [dict({k: v for k, v in g.items() if k not in ("params", "fused", "foreach")},
              params=[by_name[names[id(p)]] for p in g["params"]])
         for g in optimizer.param_groups], foreach=False)
    x = torch.randn(5, 3)
    for _ in range(3):
        for net, opt in ((model, optimizer), (reference, loop)):
            opt.zero_grad()
            features = net.backbone(x)
            loss = net.roi_heads.motion_head(net.roi_heads.box_head(features)).square().sum()
            (loss + net.camera_head(features).square().sum()).backward()
            opt.step()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p, by_name[name], rtol=1e-5, atol=1e-6)
        assert not torch.equal(p, initial[name])  # stepped

