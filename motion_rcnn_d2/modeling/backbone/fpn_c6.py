"""FPN on ResNet + C6 whose top level P6 comes from C6 (docs/method.md section 2).

Detectron2's FPN builds P2..P5 from C2..C5 (``MODEL.FPN.IN_FEATURES``); its top block,
usually a 2x subsampling of P5, is replaced by P6 = 1x1 conv (FPN.OUT_CHANNELS) of C6.
The backbone's outputs are p2..p6 plus "res6" (the C6 map itself, read by the camera
motion head); RPN anchors 32^2..512^2 sit on p2..p6.
"""
import fvcore.nn.weight_init as weight_init
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import BACKBONE_REGISTRY, FPN

from .resnet_c6 import build_resnet_c6

__all__ = ["FPNC6", "LastLevelP6FromC6", "build_resnet_c6_fpn_backbone"]


class LastLevelP6FromC6(nn.Module):
    """FPN top block: P6 = W * C6 + b, a 1x1 conv from C6 (B, C_in, H/64, W/64) to
    (B, out_channels, H/64, W/64). Follows the top-block interface of Detectron2's FPN
    (``num_levels`` extra levels computed from the bottom-up feature ``in_feature``)."""

    def __init__(self, in_channels, out_channels, in_feature="res6"):
        super().__init__()
        self.num_levels = 1
        self.in_feature = in_feature
        self.p6 = nn.Conv2d(in_channels, out_channels, kernel_size=1)
        weight_init.c2_xavier_fill(self.p6)

    def forward(self, c6):
        return [self.p6(c6)]


class FPNC6(FPN):
    """Detectron2's :class:`FPN` with :class:`LastLevelP6FromC6` as its top block, which
    also returns the bottom-up C6 map under its own name (``c6_feature``).

    ``size_divisibility`` stays that of Detectron2's FPN, the stride of its last input (res5:
    32), which the top-down path needs; C6 and P6 are then ceil(H/64) x ceil(W/64) (the
    stride-2 conv of C6 rounds up). Padding to 64 instead would add up to 63 rows of zeros:
    at 512x160, 20 % more pixels for every layer.
    """

    def __init__(self, bottom_up, in_features, out_channels, norm="", fuse_type="sum",
                 c6_feature="res6"):
        shapes = bottom_up.output_shape()
        if c6_feature not in shapes:
            raise ValueError(
                "The FPN's bottom-up network outputs {} but not {!r}, the C6 map P6 is "
                "made from; build it with 'res6' in its out_features.".format(
                    sorted(shapes), c6_feature
                )
            )
        top_block = LastLevelP6FromC6(shapes[c6_feature].channels, out_channels, c6_feature)
        super().__init__(
            bottom_up, in_features, out_channels, norm=norm, top_block=top_block,
            fuse_type=fuse_type,
        )
        top_name = self._out_features[-1]
        if self._out_feature_strides[top_name] != shapes[c6_feature].stride:
            raise ValueError(
                "MODEL.FPN.IN_FEATURES = {}: the FPN level after the last of them ({}, "
                "stride {}) must have the stride of {} ({}); end IN_FEATURES with "
                "'res5'.".format(
                    list(in_features), top_name, self._out_feature_strides[top_name],
                    c6_feature, shapes[c6_feature].stride,
                )
            )
        self._c6_feature = c6_feature

    def forward(self, x):
        """
        Args:
            x (Tensor): (B, C, H, W) network input, H and W multiples of 32.

        Returns:
            dict[str->Tensor]: p2..p5 (B, OUT_CHANNELS, H/s, W/s), p6 and the C6 map
            (B, OUT_CHANNELS or C6 channels, ceil(H/64), ceil(W/64)).
        """
        bottom_up_features = {}
        handle = self.bottom_up.register_forward_hook(
            lambda module, inputs, outputs: bottom_up_features.update(outputs)
        )
        try:
            results = super().forward(x)
        finally:
            handle.remove()
        results[self._c6_feature] = bottom_up_features[self._c6_feature]
        return results

    def output_shape(self):
        shapes = super().output_shape()
        shapes[self._c6_feature] = self.bottom_up.output_shape()[self._c6_feature]
        return shapes


@BACKBONE_REGISTRY.register()
def build_resnet_c6_fpn_backbone(cfg, input_shape: ShapeSpec):
    """ResNet + C6 bottom-up (its outputs: MODEL.FPN.IN_FEATURES and res6, whatever
    MODEL.RESNETS.OUT_FEATURES says) and FPN with MODEL.FPN.OUT_CHANNELS, NORM and
    FUSE_TYPE.

    Returns:
        FPNC6: outputs p2..p6 (strides 4..64) and res6 (stride 64).
    """
    in_features = list(cfg.MODEL.FPN.IN_FEATURES)
    if not in_features:
        raise ValueError(
            "MODEL.FPN.IN_FEATURES is empty: set it to ['res2', 'res3', 'res4', 'res5'] for "
            "the FPN on ResNet + C6."
        )
    bottom_up = build_resnet_c6(
        cfg, input_shape, out_features=in_features + [f for f in ["res6"] if f not in in_features]
    )
    return FPNC6(
        bottom_up,
        in_features,
        cfg.MODEL.FPN.OUT_CHANNELS,
        norm=cfg.MODEL.FPN.NORM,
        fuse_type=cfg.MODEL.FPN.FUSE_TYPE,
    )
