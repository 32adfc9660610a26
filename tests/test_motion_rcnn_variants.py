"""MotionRCNN variants: the C4 (Res5) RoI head, quaternion rotations, and the motion-free model
that must be exactly Mask R-CNN (GeneralizedRCNN) with the C6 backbone on the stacked input,
and the mask head read in chunks at inference."""
import pytest
import torch
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

from motion_rcnn_d2.geometry import backproject, compose_flow
from motion_rcnn_d2.modeling.roi_heads import MotionRes5ROIHeads


def test_c4_trains_every_parameter():
    model = build_model(tiny_cfg("c4", SUPERVISION="both"))
    assert isinstance(model.roi_heads, MotionRes5ROIHeads)
    assert set(model.backbone.output_shape()) == {"res4", "res6"}
    losses = train_step(model, [make_input(seed=0), make_input(seed=1, num_instances=0)])
    assert {"loss_motion_rot", "loss_flow_roi", "loss_cam_rot", "loss_flow_cam"} <= set(losses)
    assert_every_parameter_has_a_gradient(model)


def test_c4_outputs_and_flow():
    model = build_model(tiny_cfg("c4"))
    diversify_motions(model, seed=4)
    x = make_input(seed=8, training=False)
    out = outputs(model, x)
    inst = out["instances"]
    n = len(inst)
    assert n > 0 and inst.pred_masks.shape == (n, 96, 128)
    assert inst.pred_rotations.shape == (n, 3, 3) and inst.pred_pivots.shape == (n, 3)
    cam = out["camera_motion"]
    flow, valid = compose_flow(x["depth"][None], x["intrinsics"][None],
                               one_hot_by_score(inst.pred_masks, inst.scores)[None],
                               inst.pred_rotations[None], inst.pred_translations[None],
                               inst.pred_pivots[None], cam["rotation"][None],
                               cam["translation"][None])
    assert torch.equal(out["flow_valid"], valid[0])
    assert torch.allclose(out["flow"], flow[0], atol=1e-3)


def test_quaternion_rotations_train():
    cfg = tiny_cfg()
    cfg.MODEL.ROI_MOTION_HEAD.ROTATION_PARAM = "quaternion"
    cfg.MODEL.CAMERA_MOTION_HEAD.ROTATION_PARAM = "quaternion"
    cfg.MODEL.ROI_MOTION_HEAD.CLS_AGNOSTIC = True
    model = build_model(cfg)
    assert model.roi_heads.motion_head.predictor.out_features == 4 + 3 + 3 + 2
    train_step(model, [make_input(seed=2)])
    assert_every_parameter_has_a_gradient(model)


def _reference_input(x):
    """The same pair as one 12-channel 'image' for GeneralizedRCNN (XYZ computed here)."""
    xyz = [backproject(d[None], x["intrinsics"][None])[0] * (d > 0) for d in
           (x["depth"], x["depth_next"])]
    ref = {key: x[key] for key in ("height", "width", "instances") if key in x}
    ref["image"] = torch.cat([x["image"].float(), x["image_next"].float()] + xyz)
    return ref


def test_without_motion_heads_the_model_is_mask_rcnn():
    cfg = tiny_cfg(MOTION_ON=False, CAMERA_MOTION_ON=False, XYZ_SCALE=2.0)
    model = build_model(cfg)
    ref_cfg = cfg.clone()
    ref_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    ref_cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    ref_cfg.MODEL.PIXEL_MEAN = list(cfg.MODEL.PIXEL_MEAN) * 2 + [0.0] * 6
    ref_cfg.MODEL.PIXEL_STD = list(cfg.MODEL.PIXEL_STD) * 2 + [2.0] * 6
    reference = build_model(ref_cfg)
    reference.load_state_dict(model.state_dict())  # strict: the same parameters

    inputs = [make_input(seed=0), make_input(seed=1)]
    ref_inputs = [_reference_input(x) for x in inputs]
    torch.manual_seed(0)
    losses = train_step(model, inputs)
    torch.manual_seed(0)
    ref_losses = train_step(reference, ref_inputs)
    assert set(losses) == set(ref_losses)
    for key, value in losses.items():
        assert torch.allclose(value, ref_losses[key], rtol=1e-4, atol=1e-6), key

    x = make_input(seed=3, training=False)
    out = outputs(model, x)
    ref_out = outputs(reference, _reference_input(x))
    assert set(out) == {"instances"}
    inst, ref_inst = out["instances"], ref_out["instances"]
    assert len(inst) == len(ref_inst) > 0
    assert set(inst.get_fields()) == set(ref_inst.get_fields())
    for key, value in inst.get_fields().items():
        ref_value = ref_inst.get(key)
        value = value.tensor if hasattr(value, "tensor") else value
        ref_value = ref_value.tensor if hasattr(ref_value, "tensor") else ref_value
        assert torch.allclose(value.float(), ref_value.float(), atol=1e-4), key


def _chunks(n, size):
    return [size] * (n // size) + [n % size] * (n % size > 0)


@pytest.mark.parametrize("variant", ["fpn", "c4"])
def test_mask_head_in_chunks_gives_the_masks_of_one_call(variant):
    """MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK 3: the mask head reads at most 3 detections of one
    image per call, and every detection's mask is that of one call over all the detections of
    the batch (0), to float rounding."""
    cfg = tiny_cfg(variant)
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    xs = [make_input(seed=5, training=False), make_input(seed=6, training=False)]
    raw, calls = {}, {}
    for chunk in (0, 3):
        cfg.MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK = chunk
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        calls[chunk] = []
        model.roi_heads.mask_head.predictor.register_forward_pre_hook(
            lambda _, inputs, n=calls[chunk]: n.append(len(inputs[0])))
        with torch.no_grad():
            raw[chunk] = model.inference(xs, do_postprocess=False)
    n = [len(r) for r in raw[0]]
    assert min(n) >= 7 and calls[0] == [sum(n)]
    assert calls[3] == _chunks(n[0], 3) + _chunks(n[1], 3)
    for chunked, whole in zip(raw[3], raw[0]):
        torch.testing.assert_close(chunked.pred_masks, whole.pred_masks, rtol=0, atol=1e-6)
        assert torch.equal(chunked.pred_translations, whole.pred_translations)


def test_chunked_mask_head_gives_an_image_without_detections_empty_masks():
    cfg = tiny_cfg()
    cfg.MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK = 2
    heads = build_model(cfg).eval().roi_heads
    images = [Instances((96, 128), pred_classes=torch.tensor(c, dtype=torch.int64))
              for c in ([], [0, 1, 1, 0, 1])]
    x = torch.randn(5, cfg.MODEL.FPN.OUT_CHANNELS, 14, 14)
    with torch.no_grad():
        heads._mask_inference(x, images)
        expected = heads.mask_head(x, [images[1][:]])[0].pred_masks  # one call
    assert images[0].pred_masks.shape == (0, 1, 28, 28)
    torch.testing.assert_close(images[1].pred_masks, expected, rtol=0, atol=1e-6)


def test_mask_head_not_chunked_while_tracing():
    """A trace would fix the number of chunks (and with it the number of detections): traced,
    the mask head runs once over all the detections; eager, in chunks."""
    cfg = tiny_cfg()
    cfg.MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK = 3
    heads = build_model(cfg).eval().roi_heads.requires_grad_(False)  # traced as constants
    calls = []
    heads.mask_head.predictor.register_forward_pre_hook(lambda _, i: calls.append(len(i[0])))

    def masks(x):
        classes = torch.zeros(len(x), dtype=torch.int64)
        return heads._mask_inference(x, [Instances((96, 128), pred_classes=classes)])[0].pred_masks

    x = torch.randn(7, cfg.MODEL.FPN.OUT_CHANNELS, 14, 14)
    with torch.no_grad():
        traced = torch.jit.trace(masks, x, check_trace=False)
        assert calls == [7]
        torch.testing.assert_close(traced(x), masks(x), rtol=0, atol=1e-6)
    assert calls == [7, 3, 3, 1]  # the trace (its graph runs no hooks), then the eager chunks


def test_negative_mask_chunk_is_refused():
    cfg = tiny_cfg()
    cfg.MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK = -1
    with pytest.raises(ValueError, match="INFERENCE_CHUNK = -1"):
        build_model(cfg)
