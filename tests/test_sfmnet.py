"""SfM-Net meta-architecture: losses by hand, warping, flow at the original size, zero motion,
gradients, overfitting, configs."""
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.geometry import (compose_flow, euler_sines_to_matrix, scale_intrinsics,
                                     warp_backward)
from motion_rcnn_d2.modeling.meta_arch import SfMNet
from motion_rcnn_d2.modeling.meta_arch import sfmnet_losses as L
from overfit import overfit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEAN, STD = [103.53, 116.28, 123.675], [57.375, 57.12, 58.395]
SUPERVISED = {"photometric": 1.0, "depth_smooth": 0.01, "flow_smooth": 0.01, "mask_smooth": 0.01,
              "depth": 0.1, "camera_motion": 1.0, "flow": 0.1}


def _model(**kwargs):
    # BASE_CHANNELS 8 instead of 32: the same network, narrow enough for fast CPU tests.
    kwargs.setdefault("base_channels", 8)
    return SfMNet(pixel_mean=MEAN, pixel_std=STD, **kwargs)


def _intrinsics(height, width, focal=80.0):
    return torch.tensor([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1.0]])


def _texture(height, width):
    return F.interpolate(torch.rand(1, 3, height // 8 + 3, width // 8 + 3), size=(height, width),
                         mode="bilinear", align_corners=False)[0] * 255


def _scene(height, width):
    """A ground-plane-like depth (4..16 m), a forward-moving, slightly turning camera, the exact
    flow it implies, and frame t+1 made by sampling frame t at x - flow (approximately
    consistent with the flow)."""
    k = _intrinsics(height, width)
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    depth = (4 + 12 * (1 - rows / height))[None]
    rotation = euler_sines_to_matrix(torch.tensor([0.0, 0.02, 0.0]))
    translation = torch.tensor([0.1, 0.0, 0.5])
    flow, valid = compose_flow(depth[None], k[None], camera_rotation=rotation[None],
                               camera_translation=translation[None])
    frame = _texture(height, width)
    frame_next, _ = warp_backward(frame[None], -flow)
    return {"image": frame.byte(), "image_next": frame_next[0].byte(), "intrinsics": k,
            "depth": depth, "flow": flow[0], "flow_valid": valid[0],
            "camera_motion": {"rotation": rotation, "translation": translation}}


def test_warping_reproduces_a_shifted_image():
    """Frame t+1 = frame t moved right by 3 px, then by 1.5 px on a horizontal ramp (bilinear is
    exact on a linear image): warping back by the flow gives frame t where x + flow is inside."""
    image = torch.rand(1, 3, 20, 30)
    shifted = torch.zeros_like(image)
    shifted[..., 3:] = image[..., :-3]
    flow = torch.zeros(1, 2, 20, 30)
    flow[:, 0] = 3.0
    warped, inside = warp_backward(shifted, flow)
    assert inside[0, :, :27].all() and not inside[0, :, 27:].any()
    torch.testing.assert_close(warped[..., :27], image[..., :27])
    assert L.photometric_loss(image, shifted, flow, torch.ones(1, 20, 30, dtype=torch.bool)) \
        == pytest.approx(0.0, abs=1e-6)
    assert L.photometric_loss(image, shifted, flow * 0, torch.ones(1, 20, 30, dtype=torch.bool)) \
        > 0.1

    ramp = torch.arange(30.0).expand(1, 1, 20, 30) / 30
    ramp_next = ramp - 1.5 / 30  # content moved right by 1.5 px
    flow[:, 0] = 1.5
    warped, inside = warp_backward(ramp_next, flow)
    torch.testing.assert_close(warped[..., :28], ramp[..., :28])


def test_losses_hand_computed():
    values = torch.tensor([[[[0.0, 1.0, 3.0], [2.0, 2.0, 2.0]]]])
    # |dx| = (1, 2, 0, 0) -> mean 0.75; |dy| = (2, 1, 1) -> mean 4/3
    assert L.smoothness_loss(values).item() == pytest.approx(0.75 + 4 / 3)
    depth = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    gt = torch.tensor([[[[1.5, 0.0], [2.0, float("inf")]]]])  # two valid pixels
    assert L.depth_loss(depth, gt).item() == pytest.approx((0.5 + 1.0) / 2)
    rot = euler_sines_to_matrix(torch.tensor([[0.0, 0.1, 0.0]]))
    loss = L.camera_motion_loss(rot, torch.tensor([[1.0, 0.0, 0.0]]), torch.eye(3)[None],
                                torch.tensor([[0.0, 0.0, 2.0]]))
    cos = (1 - 0.01) ** 0.5
    assert loss.item() == pytest.approx(2 * (1 - cos) + 2 * 0.1 + 1.0 + 2.0, rel=1e-5)
    flow = torch.zeros(1, 2, 1, 3)
    gt_flow = torch.tensor([[[[1.0, 2.0, 9.0]], [[-1.0, 0.0, 9.0]]]])
    valid = torch.tensor([[[True, True, False]]])
    assert L.flow_loss(flow, gt_flow, valid).item() == pytest.approx((2 + 2) / 2)


def _outputs_of(model, monkeypatch, masks_value, motions):
    def fixed(images):
        b, _, h, w = images.shape
        masks = torch.full((b, model.motion_network.num_motions, h, w), masks_value)
        return masks, {k: v.expand(b, *v.shape[1:]) for k, v in motions.items()}

    monkeypatch.setattr(model.motion_network, "forward", fixed)


def test_flow_at_original_size_is_composed_with_rescaled_intrinsics(monkeypatch):
    """Input at half size (35 x 50) with K scaled by 1/2, height/width = (70, 100): the output
    flow must be compose_flow at (70, 100) with the original K, i.e. about twice the flow."""
    model = _model(use_gt_depth=True).eval()
    n = model.motion_network.num_motions
    motions = {
        "rotations": euler_sines_to_matrix(torch.tensor([0.01, -0.02, 0.0])).expand(1, n, 3, 3),
        "translations": torch.tensor([0.3, 0.0, -0.2]).expand(1, n, 3),
        "pivots": torch.tensor([0.0, 1.0, 8.0]).expand(1, n, 3),
        "camera_rotation": euler_sines_to_matrix(torch.tensor([[0.0, 0.01, 0.0]])),
        "camera_translation": torch.tensor([[0.0, 0.0, 0.8]]),
    }
    _outputs_of(model, monkeypatch, 0.25, motions)
    k_full = _intrinsics(70, 100)
    x = {"image": torch.zeros(3, 35, 50, dtype=torch.uint8),
         "image_next": torch.zeros(3, 35, 50, dtype=torch.uint8),
         "depth": torch.full((1, 35, 50), 10.0), "intrinsics": scale_intrinsics(k_full, 0.5, 0.5),
         "height": 70, "width": 100}
    with torch.no_grad():
        out = model([x])[0]
    expected, valid = compose_flow(
        torch.full((1, 1, 70, 100), 10.0), k_full[None], torch.full((1, n, 70, 100), 0.25),
        motions["rotations"], motions["translations"], motions["pivots"],
        motions["camera_rotation"], motions["camera_translation"])
    assert out["flow"].shape == (2, 70, 100) and out["flow_valid"].all()
    torch.testing.assert_close(out["flow"], expected[0], atol=1e-3, rtol=1e-4)
    with torch.no_grad():
        half = model([dict(x, height=35, width=50)])[0]["flow"]
    assert half.shape == (2, 35, 50)
    ratio = out["flow"][:, ::2, ::2].abs().mean() / half.abs().mean()
    assert ratio.item() == pytest.approx(2.0, rel=0.02)


def test_output_shapes_at_odd_size():
    model = _model().eval()
    x = _scene(70, 100)
    with torch.no_grad():
        out = model([dict(x), dict(x, height=141, width=201)])
    for result, (h, w) in zip(out, [(70, 100), (141, 201)]):
        assert result["flow"].shape == (2, h, w)
        assert result["flow_valid"].shape == (h, w) and result["flow_valid"].dtype == torch.bool
        assert result["depth"].shape == (1, h, w) and (result["depth"] > 0).all()
        assert result["masks"].shape == (3, h, w)
        assert result["camera_motion"]["rotation"].shape == (3, 3)
        assert result["camera_motion"]["translation"].shape == (3,)
        assert result["motions"]["rotations"].shape == (3, 3, 3)
        assert result["motions"]["translations"].shape == (3, 3)
        assert result["motions"]["pivots"].shape == (3, 3)


def test_zero_motion_with_given_depth_gives_zero_flow():
    model = _model(use_gt_depth=True).eval()
    assert model.structure_network is None
    torch.nn.init.zeros_(model.motion_network.motion_out.weight)
    torch.nn.init.zeros_(model.motion_network.motion_out.bias)
    x = _scene(70, 100)
    with torch.no_grad():
        out = model([x])[0]
    torch.testing.assert_close(out["camera_motion"]["rotation"], torch.eye(3))
    assert out["flow_valid"].all()
    assert out["flow"].abs().max() < 1e-4
    torch.testing.assert_close(out["depth"], x["depth"])


def test_gradients_reach_every_parameter():
    model = _model(base_channels=32).train()  # the default width
    losses = model([_scene(64, 96)])
    assert set(losses) == {"loss_photometric", "loss_depth_smooth", "loss_flow_smooth",
                           "loss_mask_smooth"}
    sum(losses.values()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert param.grad.abs().sum() > 0, name


def test_supervision_needs_its_inputs():
    x = _scene(64, 96)
    del x["camera_motion"]
    with pytest.raises(ValueError, match="camera_motion"):
        _model(loss_weights=SUPERVISED).train()([x])


def test_overfits_a_single_pair():
    """Adam, supervised losses at 64 x 96: the total loss falls at least 10x."""
    torch.manual_seed(0)
    model = _model(loss_weights=SUPERVISED).train()
    pair = [_scene(64, 96)]
    first, last = overfit(model, pair, lr=1e-3, max_steps=300)
    assert last < first / 10, (first, last)


@pytest.mark.parametrize("config,supervised", [("configs/synthetic/sfmnet_unsup_cpu.yaml", False),
                                               ("configs/synthetic/sfmnet_sup_cpu.yaml", True),
                                               ("configs/vkitti/sfmnet_sup.yaml", True)])
def test_config_builds_model(config, supervised):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(ROOT, config))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert isinstance(model, SfMNet)
    assert (model.loss_weights["flow"] > 0) == supervised
    assert model.loss_weights["photometric"] > 0
