"""FlowNetS meta-architecture: shapes, resize of flow, multi-scale EPE, gradients, overfitting."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.modeling.meta_arch import FlowNetS
from motion_rcnn_d2.modeling.meta_arch.flownets import downsample_flow_target, multiscale_epe
from motion_rcnn_d2.modeling.meta_arch.frame_pairs import resize_flow
from overfit import overfit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]


def _model():
    return FlowNetS(pixel_mean=MEAN, pixel_std=STD)


def _pair(size, **extra):
    x = {"image": torch.randint(0, 256, (3,) + tuple(size), dtype=torch.uint8),
         "image_next": torch.randint(0, 256, (3,) + tuple(size), dtype=torch.uint8)}
    x.update(extra)
    return x


def _shifted_pair(height, width):
    """A smooth random texture and the same texture moved by the flow (2, 1) px, plus a
    smoothly varying target flow (what the network must memorise)."""
    big = F.interpolate(torch.rand(1, 3, height // 8 + 3, width // 8 + 3),
                        size=(height + 16, width + 16), mode="bilinear", align_corners=False)[0]
    frame = big[:, 8:8 + height, 8:8 + width] * 255
    frame_next = big[:, 7:7 + height, 6:6 + width] * 255
    v, u = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    flow = torch.stack([2 + 3 * u / width, 1 - 2 * v / height]).float()
    return {"image": frame.byte(), "image_next": frame_next.byte(), "flow": flow,
            "flow_valid": torch.ones(height, width, dtype=torch.bool)}


@pytest.mark.parametrize("size,out", [((70, 100), (70, 100)), ((70, 100), (141, 199)),
                                      ((64, 128), (64, 128))])
def test_output_shape_at_original_size(size, out):
    model = _model().eval()
    with torch.no_grad():
        result = model([_pair(size, height=out[0], width=out[1]), _pair(size)])
    assert result[0]["flow"].shape == (2,) + out
    assert result[1]["flow"].shape == (2,) + size
    assert torch.isfinite(result[0]["flow"]).all()


def test_flow_doubled_when_input_was_halved(monkeypatch):
    """Input at half size with height/width of the original: the constant predicted flow
    (u, v) / FLOW_DIV = (0.1, -0.05) must come back as 2 * 20 * (0.1, -0.05) = (4, -2) px."""
    model = _model().eval()

    def constant_predict(x):
        b, _, h, w = x.shape
        flow = torch.tensor([0.1, -0.05]).view(1, 2, 1, 1)
        return [flow.expand(b, 2, h // s, w // s) for s in (4, 8, 16, 32, 64)]

    monkeypatch.setattr(model, "predict", constant_predict)
    with torch.no_grad():
        out = model([_pair((35, 50), height=70, width=100)])[0]["flow"]
    assert out.shape == (2, 70, 100)
    torch.testing.assert_close(out[0], torch.full((70, 100), 4.0))
    torch.testing.assert_close(out[1], torch.full((70, 100), -2.0))


def test_resize_flow_of_a_linear_field():
    """u(x) = 0.1 x on a 10 x 20 image (inside 16 x 32 padding), resized 2x: a pixel x' of the
    output sits at x = (x' + 0.5) / 2 - 0.5, so u'(x') = 2 * 0.1 * x = 0.1 (x' + 0.5) - 0.1."""
    u = 0.1 * torch.arange(32.0).expand(16, 32)
    flow = torch.stack([u, torch.full((16, 32), 3.0)])
    out = resize_flow(flow, (10, 20), 20, 40)
    assert out.shape == (2, 20, 40)
    x = torch.arange(40.0)
    expected_u = (0.1 * (x + 0.5) - 0.1).expand(20, 40)
    torch.testing.assert_close(out[0, :, 1:-1], expected_u[:, 1:-1])  # borders clamp
    torch.testing.assert_close(out[1], torch.full((20, 40), 6.0))  # v doubled


def test_downsample_flow_target_ignores_invalid_pixels():
    flow = torch.arange(32.0).view(1, 2, 4, 4)
    valid = torch.ones(1, 4, 4, dtype=torch.bool)
    valid[0, 0, 0] = False  # top-left cell keeps pixels (0,1), (1,0), (1,1)
    valid[0, 2:, 2:] = False  # bottom-right cell entirely invalid
    target, cell_valid = downsample_flow_target(flow, valid, 2)
    u = flow[0, 0]
    assert cell_valid.tolist() == [[[True, True], [True, False]]]
    assert target[0, 0, 0, 0] == pytest.approx((u[0, 1] + u[1, 0] + u[1, 1]).item() / 3)
    assert target[0, 0, 0, 1] == pytest.approx(u[:2, 2:].mean().item())
    assert target[0, 1, 1, 0] == pytest.approx(flow[0, 1, 2:, :2].mean().item())


def test_multiscale_epe_hand_computed():
    """Predictions = targets + (3, 4) / 20 everywhere: each valid cell has EPE 5 / 20 = 0.25, so
    loss_s = w_s * 0.25 * (valid cells at s) / (valid cells at stride 4)."""
    h, w = 64, 128
    flow = torch.randn(1, 2, h, w) * 5
    valid = torch.ones(1, h, w, dtype=torch.bool)
    valid[:, :, 64:] = False  # right half invalid (exactly half the cells at every scale)
    weights = (0.005, 0.01, 0.02, 0.08, 0.32)
    preds = [downsample_flow_target(flow / 20, valid, s)[0] + torch.tensor([3.0, 4.0]).view(
        1, 2, 1, 1) / 20 for s in (4, 8, 16, 32, 64)]
    losses = multiscale_epe(preds, flow, valid, 20.0, weights)
    finest = (h // 4) * (w // 4) / 2
    for s, weight in zip((4, 8, 16, 32, 64), weights):
        cells = (h // s) * (w // s) / 2
        assert losses[f"loss_flow{s}"].item() == pytest.approx(weight * 0.25 * cells / finest,
                                                               rel=1e-4)


def test_gradients_reach_every_parameter():
    model = _model().train()
    losses = model([_pair((64, 64), flow=torch.randn(2, 64, 64) * 3,
                          flow_valid=torch.rand(64, 64) > 0.3)])
    assert set(losses) == {f"loss_flow{s}" for s in (4, 8, 16, 32, 64)}
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_training_without_flow_names_the_key():
    with pytest.raises(ValueError, match="flow"):
        _model().train()([_pair((64, 64))])


def test_overfits_a_single_pair():
    """Adam at 64 x 96: the multi-scale EPE falls at least 10x within 100 iterations, and
    the full-resolution end-point error of the inference output falls at least 5x."""
    torch.manual_seed(0)
    model = _model()
    pair = [_shifted_pair(64, 96)]

    def full_resolution_epe():
        model.eval()
        with torch.no_grad():
            flow = model([dict(pair[0])])[0]["flow"]
        model.train()
        return (flow - pair[0]["flow"]).norm(dim=0).mean().item()

    first_epe = full_resolution_epe()
    first, last = overfit(model, pair, lr=1e-4, max_steps=100)
    assert last < first / 10, (first, last)
    assert full_resolution_epe() < first_epe / 5


@pytest.mark.parametrize("config", ["configs/synthetic/flownets_cpu.yaml",
                                    "configs/vkitti/flownets.yaml"])
def test_config_builds_model(config):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert isinstance(model, FlowNetS)
    assert model.loss_weights == (0.005, 0.01, 0.02, 0.08, 0.32)
    assert model.flow_div == 20.0
