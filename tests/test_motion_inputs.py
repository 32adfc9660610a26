"""What the RoI motion head reads (MODEL.ROI_MOTION_HEAD.IN_FEATURES): the pooled XYZ and XYZ
change of each RoI, the camera head's translation, their checks, and a fit that separates
objects by their XYZ change."""
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from motion_rcnn_d2.modeling.layers import RunningStandardize, xyz_and_change
from motion_rcnn_d2.modeling.motion import (
    MOTION_CAMERA_KEY,
    MOTION_XYZ_KEY,
)

from motion_rcnn_inputs import make_input, tiny_cfg


def _cfg(in_features=("xyz", "camera"), pool=2, **motion_rcnn):
    cfg = tiny_cfg(**motion_rcnn)
    cfg.MODEL.ROI_MOTION_HEAD.IN_FEATURES = list(in_features)
    cfg.MODEL.ROI_MOTION_HEAD.XYZ_POOL_SIZE = pool
    cfg.MODEL.ROI_MOTION_HEAD.STANDARDIZE_INPUT = True
    return cfg


def test_xyz_and_change_of_the_network_input():
    x = torch.randn(2, 12, 5, 7)
    out = xyz_and_change(x)
    assert torch.equal(out[:, :3], x[:, 6:9])
    assert torch.allclose(out[:, 3:], 10.0 * (x[:, 9:12] - x[:, 6:9]))


def test_pooled_xyz_is_the_value_at_the_bin_centres_and_camera_is_the_rois_image():
    """On a map linear in (u, v), each RoIAlign bin average is the map at the bin centre
    u_j = x0 - 0.5 + (j + 0.5) w / P (pixel-centre coordinates), computed independently here."""
    model = build_model(_cfg(pool=2))
    heads = model.roi_heads
    height, width = 40, 60
    v, u = torch.meshgrid(torch.arange(height, dtype=torch.float32),
                          torch.arange(width, dtype=torch.float32), indexing="ij")
    channels = torch.stack([u, v, 2 * u - v, u + 3, -v, 0.5 * u + 0.25 * v])
    xyz_map = torch.stack([channels, channels * -1.0])  # (2, 6, H, W)
    camera = torch.tensor([[0.1, 0.2, -0.9], [0.0, -0.1, -0.5]])
    features = {MOTION_XYZ_KEY: xyz_map, MOTION_CAMERA_KEY: camera}
    boxes = [Boxes(torch.tensor([[10.0, 8.0, 30.0, 20.0]])),
             Boxes(torch.tensor([[4.0, 4.0, 12.0, 36.0], [20.0, 10.0, 50.0, 30.0]]))]
    out = heads._motion_input(None, features, boxes)
    assert out.shape == (3, 6 * 4 + 3)
    rows = [(0, boxes[0].tensor[0]), (1, boxes[1].tensor[0]), (1, boxes[1].tensor[1])]
    for r, (image, (x0, y0, x1, y1)) in enumerate(rows):
        cu = [x0 - 0.5 + (j + 0.5) * (x1 - x0) / 2 for j in range(2)]
        cv = [y0 - 0.5 + (i + 0.5) * (y1 - y0) / 2 for i in range(2)]
        sign = 1.0 if image == 0 else -1.0
        expected = torch.tensor([[[sign * f(cu[j], cv[i]) for j in range(2)] for i in range(2)]
                                 for f in (lambda a, b: a, lambda a, b: b,
                                           lambda a, b: 2 * a - b, lambda a, b: a + 3,
                                           lambda a, b: -b, lambda a, b: 0.5 * a + 0.25 * b)])
        assert torch.allclose(out[r, :24], expected.flatten(), atol=1e-4)
        assert torch.equal(out[r, 24:], camera[image])


def test_in_features_are_checked_against_the_config():
    with pytest.raises(ValueError, match="IN_FEATURES.*use one or more"):
        build_model(_cfg(in_features=("box", "flow")))
    with pytest.raises(ValueError, match="XYZ_INPUT True"):
        build_model(_cfg(in_features=("xyz",), xyz_input=False))
    with pytest.raises(ValueError, match="CAMERA_MOTION_ON True"):
        build_model(_cfg(in_features=("camera",), camera_motion_on=False))
    heads = build_model(_cfg()).roi_heads
    with pytest.raises(ValueError, match="features\\['motion_xyz'\\], which MotionRCNN adds"):
        heads._motion_input(None, {}, [Boxes(torch.zeros(1, 4))])


def test_model_reads_xyz_and_camera_and_the_motion_loss_leaves_the_camera_head_alone():
    torch.manual_seed(0)
    model = build_model(_cfg())
    assert model.roi_heads.motion_context_keys == (MOTION_XYZ_KEY, MOTION_CAMERA_KEY)
    assert model.roi_heads.motion_head.standardize.running_mean.shape == (6 * 4 + 3,)
    x = make_input()
    model.train()
    from detectron2.utils.events import EventStorage
    with EventStorage():
        images = model.preprocess_image([x])
        features, camera = model._features_and_camera(images)
        assert torch.equal(features[MOTION_XYZ_KEY], xyz_and_change(images.tensor))
        assert torch.equal(features[MOTION_CAMERA_KEY], camera["translations"])
        assert not features[MOTION_CAMERA_KEY].requires_grad
        losses = model([x])
    losses["loss_motion_trans"].backward()
    camera_grads = [p.grad for p in model.camera_head.parameters() if p.grad is not None]
    assert all(float(g.abs().max()) == 0.0 for g in camera_grads)
    motion_grads = [p.grad for p in model.roi_heads.motion_head.parameters()]
    assert any(g is not None and float(g.abs().max()) > 0 for g in motion_grads)
    model.eval()
    with torch.no_grad():
        out = model([make_input(training=False)])[0]
    assert out["instances"].pred_translations.shape[1:] == (3,)


def test_running_standardize_ignores_a_batch_without_rows():
    layer = RunningStandardize(3)
    layer(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]))
    mean = layer.running_mean.clone()
    assert layer(torch.zeros(0, 3)).shape == (0, 3)
    assert torch.equal(layer.running_mean, mean) and int(layer.num_batches_tracked) == 1


def test_head_on_xyz_change_separates_object_translations():
    """Four RoIs whose XYZ change differs (t_z 1.2, -0.8, 0.4, 0 m on a camera moving
    -0.8 m): the head fitted on the pooled inputs predicts each translation, which one shared
    output cannot (the mean is 0.2 m away from every target at least)."""
    torch.manual_seed(0)
    model = build_model(_cfg())
    heads = model.roi_heads
    height, width = 48, 64
    xyz_map = torch.zeros(1, 6, height, width)
    xyz_map[:, 2] = 1.5  # Z_t = 15 m in units of XYZ_SCALE
    targets = torch.tensor([1.2, -0.8, 0.4, 0.0])
    boxes = torch.tensor([[2.0, 2.0, 22.0, 22.0], [34.0, 2.0, 62.0, 22.0],
                          [2.0, 26.0, 22.0, 46.0], [34.0, 26.0, 62.0, 46.0]])
    for (x0, y0, x1, y1), t_z in zip(boxes.long().tolist(), targets.tolist()):
        xyz_map[:, 5, y0:y1, x0:x1] = t_z - 0.8  # 10 (Z_t+1 - Z_t) / XYZ_SCALE = change in m
    features = {MOTION_XYZ_KEY: xyz_map, MOTION_CAMERA_KEY: torch.tensor([[0.0, 0.0, -0.8]])}
    proposals = Instances((height, width), proposal_boxes=Boxes(boxes),
                          gt_classes=torch.tensor([0, 1, 0, 1]),
                          gt_rotations=torch.eye(3).expand(4, 3, 3),
                          gt_translations=torch.nn.functional.pad(targets[:, None], (2, 0)),
                          gt_pivots=torch.zeros(4, 3), gt_moving=targets != 0)
    head = heads.motion_head
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3)
    heads.train()
    for _ in range(150):
        losses = heads._motion_losses(None, features, [proposals], None, None)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    heads.eval()
    with torch.no_grad():
        pred = head(heads._motion_input(None, features, [Boxes(boxes)]), torch.tensor([0, 1, 0, 1]))
    moving = pred["moving_logits"].argmax(dim=1).bool()
    assert torch.equal(moving, targets != 0)
    assert torch.allclose(pred["translations"][:3, 2], targets[:3], atol=0.1)
