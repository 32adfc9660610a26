"""ResNet with the extra stride-64 stage C6 ("res6") and a multi-frame stem.

docs/method.md section 2 and the thesis's ResNet table: Detectron2's ResNet (depth 18, 34,
50, 101 or 152) followed by one more stage C6 of the same block type and width as
C5 (R50/R101: bottleneck blocks with 512 bottleneck and 2048 output channels; R18/R34:
basic blocks with 512 channels), whose first block has stride 2, so C6 has stride 64
like FlowNetS' bottleneck. The number of C6 blocks is ``MODEL.RESNETS.C6_NUM_BLOCKS``
(thesis table: 2; original code: 3). The stem takes ``input_shape.channels`` inputs
(6 = two frames, 12 = two frames plus XYZ_t and XYZ_t+1).

Detectron2's blocks add a projection shortcut only when the number of channels
changes; the first C6 block keeps the channels but halves the resolution, so it gets a
projection shortcut (1x1 conv with stride 2 + norm), the standard ResNet choice for a
shape-changing block (the original TF-slim code subsampled the identity instead).
"""
import fvcore.nn.weight_init as weight_init
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling.backbone import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import (
    BasicBlock,
    BottleneckBlock,
    ResNet,
    build_resnet_backbone,
)

__all__ = [
    "BasicBlockC6",
    "BottleneckBlockC6",
    "ResNetC6",
    "build_resnet_c6",
    "build_resnet_c6_backbone",
    "make_res6_stage",
]

_SUPPORTED_DEPTHS = (18, 34, 50, 101, 152)


def _projection_shortcut(in_channels, out_channels, stride, norm):
    shortcut = Conv2d(
        in_channels,
        out_channels,
        kernel_size=1,
        stride=stride,
        bias=False,
        norm=get_norm(norm, out_channels),
    )
    weight_init.c2_msra_fill(shortcut)
    return shortcut


class BottleneckBlockC6(BottleneckBlock):
    """Detectron2's :class:`BottleneckBlock` that also projects the shortcut when only
    the stride changes (``in_channels == out_channels`` and ``stride > 1``)."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN", **kwargs):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm, **kwargs)
        if self.shortcut is None and stride != 1:
            self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)


class BasicBlockC6(BasicBlock):
    """Detectron2's :class:`BasicBlock` that also projects the shortcut when only the
    stride changes (``in_channels == out_channels`` and ``stride > 1``)."""

    def __init__(self, in_channels, out_channels, *, stride=1, norm="BN"):
        super().__init__(in_channels, out_channels, stride=stride, norm=norm)
        if self.shortcut is None and stride != 1:
            self.shortcut = _projection_shortcut(in_channels, out_channels, stride, norm)


class ResNetC6(ResNet):
    """Detectron2's :class:`ResNet` whose stages may go beyond res5.

    Stages are named res2, res3, ... in order, so a fifth stage is "res6". Detectron2's
    ResNet keeps only the stages up to the deepest of res2..res5 named in
    ``out_features``; here "res6" counts as well (stages after the deepest requested
    one are dropped, so unused layers hold no parameters).

    ``size_divisibility`` is the largest stride among the outputs (64 with res6), so
    that padded inputs give feature maps of exactly H/stride x W/stride.
    """

    def __init__(self, stem, stages, out_features=None, freeze_at=0):
        names = ["res{}".format(i + 2) for i in range(len(stages))]
        if out_features is not None:
            unknown = [f for f in out_features if f != "stem" and f not in names]
            if unknown:
                raise ValueError(
                    "MODEL.RESNETS.OUT_FEATURES contains {} but this ResNet has only "
                    "'stem' and {}; choose among those.".format(unknown, names)
                )
            deepest = max([names.index(f) + 1 for f in out_features if f in names], default=1)
            stages = stages[:deepest]
        super().__init__(stem, stages, out_features=None, freeze_at=freeze_at)
        if out_features is not None:
            self._out_features = list(out_features)

    @property
    def size_divisibility(self) -> int:
        return max(self._out_feature_strides[f] for f in self._out_features)


def make_res6_stage(cfg, in_channels):
    """The blocks of C6 for ``cfg.MODEL.RESNETS`` (list of CNNBlockBase).

    Same block type and widths as res5: out = RES2_OUT_CHANNELS * 8 (R50: 2048; R18/R34:
    512 basic blocks), bottleneck = NUM_GROUPS * WIDTH_PER_GROUP * 8 (R50: 512), same
    STRIDE_IN_1X1 and NORM; first block stride 2, the others 1; no dilation, no
    deformable convolution. ``in_channels`` = res5's output channels.
    """
    res = cfg.MODEL.RESNETS
    num_blocks = res.C6_NUM_BLOCKS
    if not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(
            "MODEL.RESNETS.C6_NUM_BLOCKS = {!r}: it must be an integer >= 1 (thesis "
            "table: 2, original code: 3).".format(num_blocks)
        )
    common = dict(
        num_blocks=num_blocks,
        in_channels=in_channels,
        out_channels=res.RES2_OUT_CHANNELS * 8,
        stride_per_block=[2] + [1] * (num_blocks - 1),
        norm=res.NORM,
    )
    if res.DEPTH < 50:
        return ResNet.make_stage(BasicBlockC6, **common)
    return ResNet.make_stage(
        BottleneckBlockC6,
        bottleneck_channels=res.NUM_GROUPS * res.WIDTH_PER_GROUP * 8,
        num_groups=res.NUM_GROUPS,
        stride_in_1x1=res.STRIDE_IN_1X1,
        **common,
    )


def build_resnet_c6(cfg, input_shape: ShapeSpec, out_features):
    """ResNet(+C6) for ``cfg.MODEL.RESNETS`` with the given ``out_features``.

    The stem and res2..res5 are exactly Detectron2's ``build_resnet_backbone`` (every
    MODEL.RESNETS key honoured); res6 comes from :func:`make_res6_stage`;
    MODEL.BACKBONE.FREEZE_AT freezes stem (1), res2 (2), ... res6 (6).
    """
    depth = cfg.MODEL.RESNETS.DEPTH
    if depth not in _SUPPORTED_DEPTHS:
        raise ValueError(
            "MODEL.RESNETS.DEPTH = {}: choose one of {}.".format(depth, _SUPPORTED_DEPTHS)
        )
    base_cfg = cfg.clone()
    base_cfg.defrost()
    base_cfg.MODEL.RESNETS.OUT_FEATURES = ["res5"]  # keep every stage of the base
    base_cfg.MODEL.BACKBONE.FREEZE_AT = 0  # frozen once, below, with res6
    base = build_resnet_backbone(base_cfg, input_shape)
    stages = [list(getattr(base, name)) for name in base.stage_names]
    stages.append(make_res6_stage(cfg, base.output_shape()["res5"].channels))
    return ResNetC6(
        base.stem, stages, out_features=out_features, freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT
    )


@BACKBONE_REGISTRY.register()
def build_resnet_c6_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + C6 with outputs ``cfg.MODEL.RESNETS.OUT_FEATURES`` (e.g. ["res4", "res6"]
    for the C4 variant: RPN and Res5ROIHeads on res4, the camera head on res6).

    Returns:
        ResNetC6: stem in_channels = ``input_shape.channels`` (6 or 12).
    """
    return build_resnet_c6(cfg, input_shape, list(cfg.MODEL.RESNETS.OUT_FEATURES))
