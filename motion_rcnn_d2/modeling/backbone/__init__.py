"""Backbones: ResNet + C6 (stride 64) and FPN with P6 from C6, multi-frame stem."""
from .fpn_c6 import FPNC6, LastLevelP6FromC6, build_resnet_c6_fpn_backbone
from .resnet_c6 import (
    BasicBlockC6,
    BottleneckBlockC6,
    ResNetC6,
    build_resnet_c6,
    build_resnet_c6_backbone,
    make_res6_stage,
)

__all__ = [
    "BasicBlockC6",
    "BottleneckBlockC6",
    "FPNC6",
    "LastLevelP6FromC6",
    "ResNetC6",
    "build_resnet_c6",
    "build_resnet_c6_backbone",
    "build_resnet_c6_fpn_backbone",
    "make_res6_stage",
]
