"""ResNet + C6 and FPN-with-P6-from-C6 backbones: names, channels, strides, blocks."""
import pytest
import torch
import torch.nn.functional as F
from detectron2.config import get_cfg
from detectron2.layers import FrozenBatchNorm2d, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_backbone
from detectron2.modeling.backbone.resnet import BasicBlock, BottleneckBlock
from detectron2.structures import ImageList

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.modeling.backbone import FPNC6, ResNetC6

ALL_RES = ["res2", "res3", "res4", "res5", "res6"]
STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32, "res6": 64,
           "p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
CHANNELS = {
    18: {"res2": 64, "res3": 128, "res4": 256, "res5": 512, "res6": 512},
    50: {"res2": 256, "res3": 512, "res4": 1024, "res5": 2048, "res6": 2048},
}


def make_cfg(depth=18, name="build_resnet_c6_backbone", out_features=ALL_RES, **resnets):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.MODEL.BACKBONE.NAME = name
    cfg.MODEL.RESNETS.DEPTH = depth
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if depth < 50 else 256
    cfg.MODEL.RESNETS.OUT_FEATURES = list(out_features)
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4", "res5"]
    for key, value in resnets.items():
        cfg.MODEL.RESNETS[key] = value
    return cfg


@pytest.mark.parametrize("depth", [18, 50])
@pytest.mark.parametrize("channels", [6, 12])
def test_resnet_c6_names_channels_strides(depth, channels):
    backbone = build_backbone(make_cfg(depth), ShapeSpec(channels=channels))
    assert isinstance(backbone, ResNetC6)
    assert backbone.stem.conv1.in_channels == channels
    assert backbone.size_divisibility == 64
    shapes = backbone.output_shape()
    assert list(shapes) == ALL_RES
    for name in ALL_RES:
        assert shapes[name].channels == CHANNELS[depth][name]
        assert shapes[name].stride == STRIDES[name]
    with torch.no_grad():
        out = backbone(torch.randn(2, channels, 128, 192))
    assert list(out) == ALL_RES
    for name, feature in out.items():
        s = STRIDES[name]
        assert feature.shape == (2, CHANNELS[depth][name], 128 // s, 192 // s)


def test_res6_blocks_like_res5_first_stride_2():
    backbone = build_backbone(make_cfg(50, C6_NUM_BLOCKS=3), ShapeSpec(channels=6))
    blocks = list(backbone.res6)
    assert len(blocks) == 3
    assert all(isinstance(b, BottleneckBlock) for b in blocks)
    assert [b.stride for b in blocks] == [2, 1, 1]
    # bottleneck 512, out 2048, stride in the 1x1 conv (STRIDE_IN_1X1 default True)
    assert blocks[0].conv1.out_channels == 512 and blocks[0].conv3.out_channels == 2048
    assert blocks[0].conv1.stride == (2, 2) and blocks[0].conv2.stride == (1, 1)
    # same width as res5; the first block projects its strided shortcut
    assert blocks[0].conv2.weight.shape == backbone.res5[1].conv2.weight.shape
    assert blocks[0].shortcut.stride == (2, 2) and blocks[1].shortcut is None


def test_res6_basic_blocks_and_stride_in_3x3():
    r18 = build_backbone(make_cfg(18, C6_NUM_BLOCKS=1), ShapeSpec(channels=6))
    assert len(r18.res6) == 1 and isinstance(r18.res6[0], BasicBlock)
    assert r18.res6[0].conv1.weight.shape == (512, 512, 3, 3)
    r50 = build_backbone(make_cfg(50, STRIDE_IN_1X1=False), ShapeSpec(channels=6))
    assert len(r50.res6) == 2  # default C6_NUM_BLOCKS
    assert r50.res6[0].conv1.stride == (1, 1) and r50.res6[0].conv2.stride == (2, 2)


def test_c4_variant_outputs_res4_and_res6_only():
    backbone = build_backbone(make_cfg(18, out_features=["res4", "res6"]), ShapeSpec(channels=12))
    assert list(backbone.output_shape()) == ["res4", "res6"]
    with torch.no_grad():
        out = backbone(torch.randn(2, 12, 128, 192))
    assert list(out) == ["res4", "res6"]
    assert out["res4"].shape == (2, 256, 8, 12) and out["res6"].shape == (2, 512, 2, 3)


def test_stages_after_the_deepest_output_are_dropped():
    backbone = build_backbone(make_cfg(18, out_features=["res4"]), ShapeSpec(channels=6))
    assert backbone.stage_names == ("res2", "res3", "res4")
    assert not hasattr(backbone, "res5") and not hasattr(backbone, "res6")
    assert backbone.size_divisibility == 16


def test_freeze_at_and_frozen_bn():
    cfg = make_cfg(18)
    cfg.MODEL.BACKBONE.FREEZE_AT = 2
    backbone = build_backbone(cfg, ShapeSpec(channels=6))
    assert not any(p.requires_grad for p in backbone.stem.parameters())
    assert not any(p.requires_grad for p in backbone.res2.parameters())
    assert all(p.requires_grad for p in backbone.res3.parameters())
    assert all(p.requires_grad for p in backbone.res6.parameters())
    assert isinstance(backbone.res6[0].conv1.norm, FrozenBatchNorm2d)  # NORM default FrozenBN

    cfg = make_cfg(18, NORM="BN")
    cfg.MODEL.BACKBONE.FREEZE_AT = 6
    backbone = build_backbone(cfg, ShapeSpec(channels=6))
    assert not any(p.requires_grad for p in backbone.parameters())
    assert isinstance(backbone.res6[0].shortcut.norm, FrozenBatchNorm2d)  # converted by freeze
    backbone = build_backbone(make_cfg(18, NORM="BN"), ShapeSpec(channels=6))
    assert isinstance(backbone.res6[0].shortcut.norm, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("depth", [18, 50])
def test_fpn_c6_outputs(depth):
    cfg = make_cfg(depth, name="build_resnet_c6_fpn_backbone", out_features=["res4"])
    backbone = build_backbone(cfg, ShapeSpec(channels=6))
    assert isinstance(backbone, FPNC6)
    assert backbone.size_divisibility == 32  # Detectron2's FPN: the stride of res5
    names = ["p2", "p3", "p4", "p5", "p6", "res6"]
    shapes = backbone.output_shape()
    assert list(shapes) == names
    for name in names:
        assert shapes[name].stride == STRIDES[name]
        assert shapes[name].channels == (CHANNELS[depth]["res6"] if name == "res6" else 256)
    with torch.no_grad():
        out = backbone(torch.randn(2, 6, 128, 192))
    assert list(out) == names
    for name in names:
        s = STRIDES[name]
        assert out[name].shape == (2, shapes[name].channels, 128 // s, 192 // s)
    # P6 is the 1x1 conv of C6 (not a subsampled P5)
    conv = backbone.top_block.p6
    torch.testing.assert_close(out["p6"], F.conv2d(out["res6"], conv.weight, conv.bias))
    # res6 is the bottom-up C6 map
    with torch.no_grad():
        c6 = backbone.bottom_up(torch.randn(1, 6, 64, 64))["res6"]
    assert c6.shape == (1, CHANNELS[depth]["res6"], 1, 1)


def test_odd_input_sizes_padded_to_32_and_c6_rounds_up():
    backbone = build_backbone(
        make_cfg(18, name="build_resnet_c6_fpn_backbone"), ShapeSpec(channels=12))
    images = ImageList.from_tensors(
        [torch.randn(12, 150, 157), torch.randn(12, 75, 190)], backbone.size_divisibility)
    assert images.tensor.shape[-2:] == (160, 192)  # 64 would give (192, 192)
    with torch.no_grad():
        out = backbone(images.tensor)
    for name, feature in out.items():
        s = STRIDES[name]
        assert feature.shape[-2:] == (-(-160 // s), -(-192 // s))  # ceil: P6 and C6 are 3 x 3


def test_registered_and_errors_name_the_key():
    assert BACKBONE_REGISTRY.get("build_resnet_c6_backbone") is not None
    assert BACKBONE_REGISTRY.get("build_resnet_c6_fpn_backbone") is not None
    with pytest.raises(ValueError, match="C6_NUM_BLOCKS"):
        build_backbone(make_cfg(18, C6_NUM_BLOCKS=0), ShapeSpec(channels=6))
    with pytest.raises(ValueError, match="OUT_FEATURES.*res7"):
        build_backbone(make_cfg(18, out_features=["res4", "res7"]), ShapeSpec(channels=6))
    with pytest.raises(ValueError, match="DEPTH"):
        build_backbone(make_cfg(26), ShapeSpec(channels=6))
    cfg = make_cfg(18, name="build_resnet_c6_fpn_backbone")
    cfg.MODEL.FPN.IN_FEATURES = ["res2", "res3", "res4"]
    with pytest.raises(ValueError, match="FPN.IN_FEATURES"):
        build_backbone(cfg, ShapeSpec(channels=6))
    cfg.MODEL.FPN.IN_FEATURES = []
    with pytest.raises(ValueError, match="FPN.IN_FEATURES is empty"):
        build_backbone(cfg, ShapeSpec(channels=6))


def test_stock_mask_rcnn_trains_on_the_fpn_c6_backbone():
    """Detectron2's RPN on p2..p6 and ROI heads on p2..p5 accept the backbone (the extra
    "res6" output is ignored by them) and every trainable backbone weight gets a gradient."""
    from detectron2.modeling import build_model
    from detectron2.structures import BitMasks, Boxes, Instances
    from detectron2.utils.events import EventStorage

    cfg = make_cfg(18, name="build_resnet_c6_fpn_backbone")
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD = [100.0] * 6, [50.0] * 6
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[32], [64], [128], [256], [512]]
    cfg.MODEL.RPN.IN_FEATURES = ["p2", "p3", "p4", "p5", "p6"]
    cfg.MODEL.ROI_HEADS.NAME = "StandardROIHeads"
    cfg.MODEL.ROI_HEADS.IN_FEATURES = ["p2", "p3", "p4", "p5"]
    cfg.MODEL.ROI_BOX_HEAD.NAME = "FastRCNNConvFCHead"
    cfg.MODEL.ROI_BOX_HEAD.NUM_FC = 2
    cfg.MODEL.ROI_MASK_HEAD.NAME = "MaskRCNNConvUpsampleHead"
    # small heads, few RoIs: this checks wiring, not accuracy
    cfg.MODEL.FPN.OUT_CHANNELS = cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 200, 50
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 100000  # every anchor in the loss, P6's included
    model = build_model(cfg).train()
    instances = Instances((100, 150))
    instances.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 50.0]]))
    instances.gt_classes = torch.tensor([0])
    masks = torch.zeros(1, 100, 150, dtype=torch.bool)
    masks[:, 10:50, 10:60] = True
    instances.gt_masks = BitMasks(masks)
    image = torch.randint(0, 255, (6, 100, 150), dtype=torch.uint8)
    with EventStorage():
        losses = model([{"image": image, "instances": instances}])
    sum(losses.values()).backward()
    params = model.backbone.named_parameters()
    no_grad = [n for n, p in params if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert model.backbone.top_block.p6.weight.grad.abs().sum() > 0
