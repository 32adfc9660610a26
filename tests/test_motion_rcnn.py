"""MotionRCNN (FPN variant): input stacking, training losses and gradients, outputs, flow."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.structures import Instances
from motion_rcnn_inputs import (
    assert_every_parameter_has_a_gradient,
    diversify_motions,
    make_input,
    one_hot_by_score,
    outputs,
    tiny_cfg,
    train_step,
)

from motion_rcnn_d2.geometry import backproject, camera_flow, compose_flow
from motion_rcnn_d2.modeling.meta_arch.frame_pairs import batch_tensors


def test_network_input_stacking_and_padding():
    cfg = tiny_cfg(XYZ_SCALE=4.0)
    model = build_model(cfg).eval()
    x = make_input(height=100, width=150, num_instances=0, training=False)
    images = model.preprocess_image([x])
    assert images.tensor.shape == (1, 12, 128, 160)  # padded to the size divisibility 32
    assert images.image_sizes == [(100, 150)]
    mean = torch.tensor(cfg.MODEL.PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(cfg.MODEL.PIXEL_STD).view(3, 1, 1)
    got = images.tensor[0, :, :100, :150]
    assert torch.allclose(got[:3], (x["image"].float() - mean) / std)
    assert torch.allclose(got[3:6], (x["image_next"].float() - mean) / std)
    for channels, depth in ((slice(6, 9), x["depth"]), (slice(9, 12), x["depth_next"])):
        xyz = backproject(depth[None], x["intrinsics"][None])[0] / 4.0
        assert torch.allclose(got[channels], xyz * (depth > 0), atol=1e-5)
    assert float(got[6:, :3, :5].abs().sum()) == 0.0  # invalid depth -> 0
    assert float(images.tensor[0, :, 100:].abs().sum()) == 0.0  # padding

    del x["depth_next"]  # XYZ_t+1 falls back to depth
    fallback = model.preprocess_image([x]).tensor[0]
    assert torch.equal(fallback[9:12], fallback[6:9])
    six = build_model(tiny_cfg(XYZ_INPUT=False)).eval()
    assert six.preprocess_image([x]).tensor.shape[1] == 6


def _previous_network_input(model, x):
    """The network input as it was computed before it was written into the padded batch:
    frames normalised, XYZ = where(valid, backproject(where(valid, d, 0), K), 0) / scale,
    concatenated (6 or 12, H, W)."""
    parts = [(x[key].float() - model.pixel_mean) / model.pixel_std
             for key in ("image", "image_next")]
    if model.xyz_input:
        k = x["intrinsics"][None].float()
        for depth in (x["depth"], x.get("depth_next", x["depth"])):
            depth = depth[None].float()
            valid = (depth > 0) & torch.isfinite(depth)
            points = backproject(torch.where(valid, depth, torch.zeros_like(depth)), k)
            parts.append(torch.where(valid, points, torch.zeros_like(points))[0]
                         / model.xyz_scale)
    return torch.cat(parts)


@pytest.mark.parametrize("xyz", [True, False])
def test_network_input_is_bitwise_the_previous_stacking(xyz):
    model = build_model(tiny_cfg(XYZ_SCALE=7.0, XYZ_INPUT=xyz)).eval()
    a = make_input(height=70, width=90, num_instances=0, seed=1, training=False)
    b = make_input(height=100, width=61, num_instances=0, seed=2, training=False)
    a["depth"][0, 10, 11] = float("nan")
    a["depth"][0, 12, 13] = -float("inf")
    del b["depth_next"]  # XYZ_t+1 falls back to depth
    images = model.preprocess_image([a, b])
    expected = batch_tensors([_previous_network_input(model, x) for x in (a, b)],
                             model.backbone.size_divisibility, model.device)
    assert images.image_sizes == expected.image_sizes == [(70, 90), (100, 61)]
    assert images.tensor.shape == expected.tensor.shape == (2, 12 if xyz else 6, 128, 96)
    assert torch.equal(images.tensor, expected.tensor)
    assert torch.equal(model._network_input(a), expected.tensor[0, :, :70, :90])
    a["image_next"] = a["image_next"][:, :-1]
    with pytest.raises(ValueError, match=r"synthetic_1.png.*\(3, 70, 90\) and image_next "
                                         r"\(3, 69, 90\) differ in size"):
        model.preprocess_image([a])


def test_inference_frees_the_network_input_before_the_roi_heads():
    """The proposal generator and the RoI heads get the image sizes only (the network input is
    freed before the mask head's peak), with the same results as with the full ImageList."""
    model = build_model(tiny_cfg()).eval()
    diversify_motions(model)
    x = make_input(num_instances=0, training=False)
    seen = []
    for name in ("proposal_generator", "roi_heads"):
        module = getattr(model, name)
        module.register_forward_pre_hook(
            lambda _m, args, n=name: seen.append((n, tuple(args[0].tensor.shape),
                                                  args[0].image_sizes)))
    with torch.no_grad():
        raw = model.inference([x], do_postprocess=False)[0]
        images = model.preprocess_image([x])
        features, _ = model._features_and_camera(images)
        proposals, _ = model.proposal_generator(images, features)
        expected, _ = model.roi_heads(images, features, proposals)
    assert seen[:2] == [(name, (1, 0, 96, 128), [(96, 128)])
                        for name in ("proposal_generator", "roi_heads")]
    assert seen[2:] == [(name, (1, 12, 96, 128), [(96, 128)])
                        for name in ("proposal_generator", "roi_heads")]
    assert len(raw) == len(expected[0]) > 0
    for field, value in expected[0].get_fields().items():
        got = raw.get(field)
        assert torch.equal(getattr(got, "tensor", got), getattr(value, "tensor", value)), field


@pytest.mark.parametrize("supervision", ["motion", "flow", "both"])
def test_every_parameter_gets_a_gradient(supervision):
    model = build_model(tiny_cfg(SUPERVISION=supervision))
    losses = train_step(model, [make_input(seed=0)])
    expected = {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc"}
    if supervision != "flow":
        expected |= {"loss_motion_rot", "loss_motion_trans", "loss_motion_pivot",
                     "loss_motion_moving", "loss_cam_rot", "loss_cam_trans", "loss_cam_moving"}
    if supervision != "motion":
        expected |= {"loss_flow_roi", "loss_flow_cam"}
    assert set(losses) == expected
    assert_every_parameter_has_a_gradient(model)


def test_images_without_instances_train():
    model = build_model(tiny_cfg(SUPERVISION="both"))
    inputs = [make_input(seed=3, num_instances=0), make_input(seed=4, num_instances=0)]
    losses = train_step(model, inputs)
    assert float(losses["loss_motion_trans"]) == 0.0 and float(losses["loss_flow_roi"]) == 0.0
    assert float(losses["loss_flow_cam"]) > 0.0
    assert_every_parameter_has_a_gradient(model)  # DDP without find_unused_parameters


def test_training_errors_name_the_missing_ground_truth():
    x = make_input(flow=False)
    with pytest.raises(ValueError, match="flow"):
        train_step(build_model(tiny_cfg(SUPERVISION="flow")), [x])
    x = make_input()
    del x["camera_motion"]
    with pytest.raises(ValueError, match="camera_motion"):
        train_step(build_model(tiny_cfg()), [x])
    x = make_input()
    x["instances"].remove("gt_pivots")
    with pytest.raises(ValueError, match="SUPERVISION 'flow'"):
        train_step(build_model(tiny_cfg()), [x])


@pytest.mark.parametrize("variant", ["fpn", "c4"])
def test_unknown_supervision_is_an_error_naming_the_key(variant):
    with pytest.raises(ValueError, match=r"MODEL\.MOTION_RCNN\.SUPERVISION = 'flo': use one of "
                                         r"\('motion', 'flow', 'both'\)"):
        build_model(tiny_cfg(variant, SUPERVISION="flo"))
    cfg = tiny_cfg(variant, SUPERVISION="flo", MOTION_ON=False)  # no RoI motion head: the camera
    with pytest.raises(ValueError, match="SUPERVISION = 'flo'"):  # loss still reads it
        build_model(cfg)


def test_output_shapes_and_gating():
    model = build_model(tiny_cfg())
    diversify_motions(model)
    x = make_input(seed=5, training=False)
    x["height"], x["width"] = 192, 256  # original size: twice the network input
    out = outputs(model, x)
    inst = out["instances"]
    n = len(inst)
    assert n > 0 and inst.image_size == (192, 256)
    assert inst.pred_boxes.tensor.shape == (n, 4) and inst.scores.shape == (n,)
    assert inst.pred_classes.shape == (n,) and inst.pred_masks.shape == (n, 192, 256)
    assert inst.pred_masks.dtype == torch.bool
    assert inst.pred_rotations.shape == (n, 3, 3) and inst.pred_translations.shape == (n, 3)
    assert inst.pred_pivots.shape == (n, 3) and inst.pred_moving_scores.shape == (n,)
    cam = out["camera_motion"]
    assert cam["rotation"].shape == (3, 3) and cam["translation"].shape == (3,)
    assert cam["moving_score"].shape == ()
    assert out["flow"].shape == (2, 192, 256) and out["flow_valid"].shape == (192, 256)
    assert out["flow_valid"].dtype == torch.bool
    still = inst.pred_moving_scores <= 0.5
    assert still.any() and (~still).any()
    assert torch.equal(inst.pred_rotations[still], torch.eye(3).expand(int(still.sum()), 3, 3))
    assert torch.equal(inst.pred_translations[still], torch.zeros(int(still.sum()), 3))
    assert not torch.allclose(inst.pred_rotations[~still], torch.eye(3), atol=1e-4)
    rotations = inst.pred_rotations[~still]  # orthonormal
    assert torch.allclose(rotations @ rotations.transpose(1, 2), torch.eye(3).expand_as(rotations),
                          atol=1e-5)


def test_output_flow_equals_compose_flow_of_the_output_motions():
    """Independent recomputation: soft-mask compose_flow on one-hot masks; original size 1.5x
    the network input, so depth (constant: any resize is exact) and K must be rescaled."""
    model = build_model(tiny_cfg())
    diversify_motions(model, seed=1)
    x = make_input(seed=6, training=False)
    x["depth"] = torch.full((1, 96, 128), 14.0)
    x["depth_next"] = x["depth"]
    x["height"], x["width"] = 144, 192
    out = outputs(model, x)
    inst = out["instances"]
    masks = one_hot_by_score(inst.pred_masks, inst.scores)
    assert len(inst) > 1 and float(masks.sum(0).max()) == 1.0
    assert bool((inst.pred_masks.sum(0) > 1).any())  # overlaps exist: the score order matters
    k = x["intrinsics"].clone()
    k[:2, :2] *= 1.5
    k[:2, 2] = (k[:2, 2] + 0.5) * 1.5 - 0.5  # pixel centres at integers
    cam = out["camera_motion"]
    flow, valid = compose_flow(torch.full((1, 1, 144, 192), 14.0), k[None], masks[None],
                               inst.pred_rotations[None], inst.pred_translations[None],
                               inst.pred_pivots[None], cam["rotation"][None],
                               cam["translation"][None])
    assert torch.equal(out["flow_valid"], valid[0])
    assert torch.allclose(out["flow"], flow[0], atol=1e-3)
    assert float(out["flow"].abs().max()) > 1.0


def test_zero_detections_give_empty_motions_and_camera_flow():
    model = build_model(tiny_cfg())
    diversify_motions(model, seed=2)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.bias[:-1] = -1e4  # every box is background
    x = make_input(seed=7, training=False)
    out = outputs(model, x)
    inst = out["instances"]
    assert len(inst) == 0
    assert inst.pred_rotations.shape == (0, 3, 3) and inst.pred_translations.shape == (0, 3)
    assert inst.pred_pivots.shape == (0, 3) and inst.pred_moving_scores.shape == (0,)
    cam = out["camera_motion"]
    flow, valid = camera_flow(x["depth"][None], x["intrinsics"][None], cam["rotation"][None],
                              cam["translation"][None])
    assert torch.equal(out["flow"], flow[0]) and torch.equal(out["flow_valid"], valid[0])


def test_flow_needs_masks_and_depth():
    cfg = tiny_cfg()
    cfg.MODEL.MASK_ON = False
    with pytest.raises(ValueError, match="MODEL.MASK_ON"):
        build_model(cfg)
    cfg.MODEL.MOTION_RCNN.FLOW_OUTPUT = False
    build_model(cfg)  # no flow asked: fine
    model = build_model(tiny_cfg(XYZ_INPUT=False))
    x = make_input(training=False)
    del x["depth"]
    with pytest.raises(ValueError, match="'depth'.*FLOW_OUTPUT"):
        outputs(model, x)
    with pytest.raises(ValueError, match="'depth'.*XYZ_INPUT"):
        outputs(build_model(tiny_cfg()), x)


def test_model_is_on_the_configured_device():
    cfg = tiny_cfg(XYZ_INPUT=False)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    assert {b.device.type for b in model.buffers()} == {"cpu"}
    out = outputs(model, make_input(training=False))
    assert out["flow"].device.type == "cpu" and out["instances"].scores.device.type == "cpu"


def test_nearest_resize_of_depth_for_the_original_size():
    """A depth step edge stays a step (nearest) when the flow is composed at 2x the input."""
    model = build_model(tiny_cfg(MOTION_ON=False))
    diversify_motions(model, seed=3)
    x = make_input(training=False)
    x["depth"] = torch.where(torch.arange(128) < 64, 10.0, 20.0).expand(1, 96, 128).clone()
    x["height"], x["width"] = 192, 256
    out = outputs(model, x)
    big = F.interpolate(x["depth"][None], scale_factor=2, mode="nearest")
    k = x["intrinsics"].clone()
    k[:2] *= 2.0
    k[:2, 2] += 0.5
    cam = out["camera_motion"]
    flow, _ = camera_flow(big, k[None], cam["rotation"][None], cam["translation"][None])
    assert "pred_rotations" not in out["instances"].get_fields()
    assert float(cam["moving_score"]) > 0.5 and float(flow.abs().max()) > 1.0
    assert torch.allclose(out["flow"], flow[0], atol=1e-3)


def test_batch_background_is_outside_every_mask_and_false_in_the_padding():
    from detectron2.structures import BitMasks, ImageList, Instances

    from motion_rcnn_d2.modeling.meta_arch.frame_pairs import batch_background

    images = ImageList(torch.zeros(2, 3, 6, 8), [(6, 8), (4, 5)])
    masks = torch.zeros(2, 6, 8, dtype=torch.bool)
    masks[0, 1:3, 2:4] = True
    masks[1, 4:6, 6:8] = True
    with_masks = Instances((6, 8), gt_masks=BitMasks(masks))
    none = Instances((4, 5), gt_masks=BitMasks(torch.zeros(0, 4, 5, dtype=torch.bool)))
    out = batch_background([with_masks, none], images)
    expected = torch.ones(2, 6, 8, dtype=torch.bool)
    expected[0] &= ~masks.any(dim=0)
    expected[1, 4:, :] = False
    expected[1, :, 5:] = False
    assert torch.equal(out, expected)
    assert torch.equal(batch_background(None, images)[0], torch.ones(6, 8, dtype=torch.bool))


def test_fpn_motion_head_reads_the_box_features_of_each_detections_proposal():
    """IN_FEATURES ["box"] at inference: the box head runs once (on the proposals) and the
    motion head's input row of each detection is the box head's output row of the proposal it
    came from; with given boxes the box head runs on those boxes."""
    model = build_model(tiny_cfg())
    model.eval()
    heads = model.roi_heads
    box_outputs, motion_inputs, kept = [], [], []
    hooks = [heads.box_head.register_forward_hook(lambda m, i, o: box_outputs.append(o)),
             heads.motion_head.register_forward_hook(lambda m, i, o: motion_inputs.append(i[0]))]
    inference = heads.box_predictor.inference

    def recording_inference(predictions, proposals):
        instances, indices = inference(predictions, proposals)
        kept.append(indices)
        return instances, indices

    heads.box_predictor.inference = recording_inference
    x = make_input(seed=3, training=False)
    with torch.no_grad():
        raw = model.inference([x], do_postprocess=False)[0]
        assert len(raw) > 0 and len(box_outputs) == 1 and len(motion_inputs) == 1
        torch.testing.assert_close(motion_inputs[0], box_outputs[0][kept[0][0]], rtol=0, atol=0)
        assert not raw.has("motion_proposal_box_features")  # not left in the outputs
        given = Instances(raw.image_size, pred_boxes=raw.pred_boxes, scores=raw.scores,
                          pred_classes=raw.pred_classes)
        model.inference([x], detected_instances=[given], do_postprocess=False)
    for hook in hooks:
        hook.remove()
    assert len(box_outputs) == 2 and box_outputs[1].shape[0] == len(raw)
    torch.testing.assert_close(motion_inputs[1], box_outputs[1], rtol=0, atol=0)
