"""MotionCheckpointer: Detectron2 .pkl, Caffe2 .pkl and torchvision .pth ResNets loaded into
the 6/12-channel stem, inflated (RGB filters / 2 per frame, XYZ zero)."""
import logging
import pickle

import pytest
import torch
import torchvision
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from detectron2.modeling.backbone.resnet import BasicBlock, ResNet, build_resnet_backbone
from torch import nn

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.engine import MotionCheckpointer
from motion_rcnn_d2.engine.weights import convert_torchvision_resnet_names, inflate_stem_weight


def make_cfg(depth=18, name="build_resnet_c6_backbone", **resnets):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5", "res6"]
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


def build(channels, depth=18, **kwargs):
    return build_backbone(make_cfg(depth, **kwargs), ShapeSpec(channels=channels)).eval()


def randomize_(module):
    """Random weights and BN statistics, so that every copied value is distinctive."""
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point():
                tensor.copy_(torch.rand_like(tensor) + 0.5 if "running_var" in name
                             else torch.randn_like(tensor) * 0.1)
    return module


def d2_resnet3(depth=18):
    """A 3-channel Detectron2 ResNet (what an ImageNet/COCO checkpoint was made from)."""
    cfg = make_cfg(depth)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    return randomize_(build_resnet_backbone(cfg, ShapeSpec(channels=3))).eval()


def save_pkl(path, state_dict, **extra):
    data = {"model": {k: v.numpy() for k, v in state_dict.items()}, "__author__": "test", **extra}
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return str(path)


def save_torchvision(path, depth=18):
    tv = getattr(torchvision.models, "resnet{}".format(depth))(weights=None)
    randomize_(tv)
    torch.save(tv.state_dict(), path)
    return tv.eval(), str(path)


def expected_stem(weight, channels):
    zeros = torch.zeros((weight.shape[0], channels - 6) + weight.shape[2:])
    return torch.cat([weight / 2, weight / 2, zeros], dim=1)


@pytest.mark.parametrize("channels", [6, 12])
def test_detectron2_pkl_inflated(tmp_path, caplog, channels):
    source = d2_resnet3().state_dict()
    path = save_pkl(tmp_path / "r18.pkl", source)
    model = build(channels)
    res6_before = model.res6[0].conv1.weight.clone()
    with caplog.at_level(logging.INFO):
        MotionCheckpointer(model).load(path)
    stem = model.stem.conv1.weight
    assert stem.shape == (64, channels, 7, 7)
    assert torch.equal(stem, expected_stem(source["stem.conv1.weight"], channels))
    assert torch.equal(stem[:, 6:], torch.zeros_like(stem[:, 6:]))
    for key in ["res2.0.conv1.weight", "stem.conv1.norm.running_var", "res5.1.conv2.weight"]:
        assert torch.equal(model.state_dict()[key], source[key])
    assert torch.equal(model.res6[0].conv1.weight, res6_before)  # not in the checkpoint
    assert "Inflated stem.conv1.weight from 3 to {} input channels".format(channels) in caplog.text


@pytest.mark.parametrize("channels", [6, 12])
def test_torchvision_pth_inflated_and_flipped_for_bgr(tmp_path, caplog, channels):
    tv, path = save_torchvision(tmp_path / "resnet18.pth")
    model = build(channels)
    with caplog.at_level(logging.INFO):
        MotionCheckpointer(model, input_format="BGR").load(path)
    sd = model.state_dict()
    assert torch.equal(sd["stem.conv1.weight"], expected_stem(tv.conv1.weight.flip(1), channels))
    assert not torch.equal(sd["stem.conv1.weight"][:, :3], tv.conv1.weight / 2)
    pairs = {
        "stem.conv1.norm.weight": tv.bn1.weight,
        "stem.conv1.norm.running_mean": tv.bn1.running_mean,
        "res2.0.conv1.weight": tv.layer1[0].conv1.weight,
        "res2.1.conv2.norm.bias": tv.layer1[1].bn2.bias,
        "res3.0.shortcut.weight": tv.layer2[0].downsample[0].weight,
        "res3.0.shortcut.norm.running_var": tv.layer2[0].downsample[1].running_var,
        "res5.1.conv2.weight": tv.layer4[1].conv2.weight,
    }
    for key, value in pairs.items():
        assert torch.equal(sd[key], value), key
    assert "input channels reversed" in caplog.text and "Inflated" in caplog.text


def test_torchvision_rgb_model_not_flipped(tmp_path):
    tv, path = save_torchvision(tmp_path / "resnet18.pth")
    model = build(6)
    cfg = make_cfg()
    cfg.INPUT.FORMAT = "RGB"
    MotionCheckpointer.from_config(cfg, model).load(path)
    assert torch.equal(model.stem.conv1.weight, expected_stem(tv.conv1.weight, 6))


def torchvision_features(tv, x):
    x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
    return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))


@pytest.mark.parametrize("depth", [18, 50])
def test_torchvision_names_reproduce_torchvision_features(tmp_path, caplog, depth):
    tv, path = save_torchvision(tmp_path / "tv.pth", depth)
    model = build(3, depth, STRIDE_IN_1X1=False, OUT_FEATURES=["res5"])
    MotionCheckpointer(model, input_format="RGB").load(path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["res5"], torchvision_features(tv, x))
    if depth == 50:  # Detectron2's default stride placement is not torchvision's: warn
        with caplog.at_level(logging.WARNING):
            MotionCheckpointer(build(6, 50), input_format="RGB").load(path)
        assert "STRIDE_IN_1X1 False" in caplog.text


def test_repeated_frame_gives_the_3_channel_stem_response(tmp_path):
    path = save_pkl(tmp_path / "r18.pkl", d2_resnet3().state_dict())
    stems = {}
    for channels in (3, 6, 12):
        model = build(channels)
        MotionCheckpointer(model).load(path)
        stems[channels] = model.stem
    frame, xyz = torch.randn(2, 3, 64, 64), torch.randn(2, 6, 64, 64) * 10
    with torch.no_grad():
        reference = stems[3](frame)
        torch.testing.assert_close(stems[6](torch.cat([frame, frame], 1)), reference)
        torch.testing.assert_close(stems[12](torch.cat([frame, frame, xyz], 1)), reference)


def test_caffe2_pkl_names_converted_and_inflated(tmp_path):
    source = d2_resnet3().state_dict()
    c2 = {
        "conv1_w": source["stem.conv1.weight"].numpy(),
        "res_conv1_bn_s": source["stem.conv1.norm.weight"].numpy(),
        "res_conv1_bn_b": source["stem.conv1.norm.bias"].numpy(),
        "res2_0_branch2a_w": source["res2.0.conv1.weight"].numpy(),
        "res2_0_branch2a_bn_s": source["res2.0.conv1.norm.weight"].numpy(),
        "fc1000_w": torch.randn(1000, 512).numpy(),
    }
    path = tmp_path / "R-18.pkl"
    with open(path, "wb") as f:
        pickle.dump(c2, f)
    model = build(12)
    MotionCheckpointer(model).load(str(path))
    sd = model.state_dict()
    assert torch.equal(sd["stem.conv1.weight"], expected_stem(source["stem.conv1.weight"], 12))
    for key in ["stem.conv1.norm.weight", "stem.conv1.norm.bias", "res2.0.conv1.weight",
                "res2.0.conv1.norm.weight"]:
        assert torch.equal(sd[key], source[key]), key


class C4Model(nn.Module):
    """Names of the C4 variant: backbone.res5 (feeds C6) and roi_heads.res5 (RoI head)."""

    def __init__(self):
        super().__init__()
        self.backbone = build(12, OUT_FEATURES=["res4", "res6"])
        self.roi_heads = nn.Module()
        self.roi_heads.res5 = nn.Sequential(*ResNet.make_stage(
            BasicBlock, 2, in_channels=256, out_channels=512, stride_per_block=[2, 1],
            norm="FrozenBN"))


def test_heuristic_matching_per_top_level_module(tmp_path):
    tv, path = save_torchvision(tmp_path / "resnet18.pth")
    model = C4Model()
    checkpointer = MotionCheckpointer(model, input_format="RGB")
    incompatible = checkpointer._load_model(checkpointer._load_file(path))
    assert incompatible.unexpected_keys == []  # every torchvision weight but fc is used
    assert {k.split(".")[1] for k in incompatible.missing_keys} == {"res6"}
    sd = model.state_dict()
    assert torch.equal(sd["backbone.stem.conv1.weight"], expected_stem(tv.conv1.weight, 12))
    for prefix in ("backbone.res5", "roi_heads.res5"):  # one checkpoint stage, two modules
        assert torch.equal(sd[prefix + ".0.conv1.weight"], tv.layer4[0].conv1.weight)
        assert torch.equal(sd[prefix + ".0.shortcut.weight"], tv.layer4[0].downsample[0].weight)

    source = d2_resnet3().state_dict()  # bare names into an FPN model, by heuristics
    fpn = nn.Module()
    fpn.backbone = build(6, name="build_resnet_c6_fpn_backbone")
    MotionCheckpointer(fpn).load(save_pkl(tmp_path / "r18.pkl", source, matching_heuristics=True))
    sd = fpn.state_dict()
    assert torch.equal(sd["backbone.bottom_up.stem.conv1.weight"],
                       expected_stem(source["stem.conv1.weight"], 6))
    assert torch.equal(sd["backbone.bottom_up.res4.1.conv2.weight"], source["res4.1.conv2.weight"])


def test_inflation_off_leaves_the_stem(tmp_path, caplog):
    path = save_pkl(tmp_path / "r18.pkl", d2_resnet3().state_dict())
    model = build(6)
    before = model.stem.conv1.weight.clone()
    with caplog.at_level(logging.WARNING):
        MotionCheckpointer(model, inflate_stem=False).load(path)
    assert torch.equal(model.stem.conv1.weight, before)
    assert "INFLATE_STEM is False" in caplog.text


def test_own_checkpoint_round_trip_weights_only(tmp_path, monkeypatch):
    model = randomize_(build(12))
    MotionCheckpointer(model, str(tmp_path)).save("model_final")
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    fresh = build(12)
    MotionCheckpointer(fresh).load(str(tmp_path / "model_final.pth"))
    assert calls and all(c.get("weights_only") is True for c in calls)
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


@pytest.mark.parametrize("keep", [0.0, 0.5])
def test_truncated_checkpoint_is_an_error_naming_the_file(tmp_path, keep):
    """An empty file or half a checkpoint (a copy cut short) raises an error with its name."""
    whole = tmp_path / "whole.pth"
    torch.save(build(6).state_dict(), whole)
    data = whole.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(RuntimeError, match=r"cut\.pth is not a complete torch\.save file"):
        MotionCheckpointer(build(6)).load(str(cut))


def test_inflate_stem_weight_by_hand():
    weight = torch.arange(6.0).view(2, 3, 1, 1)
    out = inflate_stem_weight(weight, 12)
    assert out.shape == (2, 12, 1, 1)
    assert out[0, :, 0, 0].tolist() == [0, 0.5, 1, 0, 0.5, 1] + [0] * 6
    assert out[1, :6, 0, 0].tolist() == [1.5, 2, 2.5, 1.5, 2, 2.5]
    with pytest.raises(ValueError, match="cannot hold"):
        inflate_stem_weight(weight, 5)


def test_torchvision_name_conversion():
    names = convert_torchvision_resnet_names({
        "conv1.weight": 0, "bn1.running_mean": 1, "bn1.num_batches_tracked": 2,
        "layer3.4.bn3.bias": 3, "layer1.0.downsample.1.weight": 4, "fc.weight": 5,
    })
    assert names == {"stem.conv1.weight": 0, "stem.conv1.norm.running_mean": 1,
                     "res4.4.conv3.norm.bias": 3, "res2.0.shortcut.norm.weight": 4}
    with pytest.raises(ValueError, match="avgpool.weight"):
        convert_torchvision_resnet_names({"avgpool.weight": 0})
