"""Weight conversions for loading ImageNet ResNets into Motion R-CNN (docs/method.md section 2):
torchvision's ResNet names to Detectron2's, and a 3-channel first conv inflated to the
multi-frame stem. Plain functions on state dicts and tensors, used by `MotionCheckpointer`."""
import re

import torch

__all__ = ["is_torchvision_resnet", "convert_torchvision_resnet_names", "inflate_stem_weight"]

_TORCHVISION_RULES = [  # (pattern, replacement); applied to each name in order, first match
    (r"^conv1\.weight$", "stem.conv1.weight"),
    (r"^bn1\.", "stem.conv1.norm."),
    (r"^layer(\d)\.(\d+)\.conv(\d)\.weight$",
     lambda m: "res{}.{}.conv{}.weight".format(int(m[1]) + 1, m[2], m[3])),
    (r"^layer(\d)\.(\d+)\.bn(\d)\.",
     lambda m: "res{}.{}.conv{}.norm.".format(int(m[1]) + 1, m[2], m[3])),
    (r"^layer(\d)\.(\d+)\.downsample\.0\.weight$",
     lambda m: "res{}.{}.shortcut.weight".format(int(m[1]) + 1, m[2])),
    (r"^layer(\d)\.(\d+)\.downsample\.1\.",
     lambda m: "res{}.{}.shortcut.norm.".format(int(m[1]) + 1, m[2])),
]


def is_torchvision_resnet(state_dict) -> bool:
    """Whether a state dict has torchvision's ResNet names (``conv1``, ``layer1.0...``)."""
    return "conv1.weight" in state_dict and "layer1.0.conv1.weight" in state_dict


def convert_torchvision_resnet_names(state_dict):
    """torchvision ResNet names -> Detectron2 ResNet names.

    conv1/bn1 -> stem.conv1(.norm); layerN.i.convK/bnK -> res(N+1).i.convK(.norm);
    layerN.i.downsample.0/1 -> res(N+1).i.shortcut(.norm). ``fc.*`` (the classifier)
    and ``num_batches_tracked`` are dropped; BN weight/bias/running_mean/running_var
    load as they are into FrozenBatchNorm2d or BatchNorm2d (same eps 1e-5).
    Any other name raises ``ValueError``.
    """
    converted = {}
    for name, value in state_dict.items():
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        for pattern, replacement in _TORCHVISION_RULES:
            new_name, count = re.subn(pattern, replacement, name)
            if count:
                converted[new_name] = value
                break
        else:
            raise ValueError(
                "'{}' is not a torchvision ResNet weight name; only torchvision's "
                "resnet18/34/50/101/152 state dicts are converted.".format(name)
            )
    return converted


def inflate_stem_weight(weight, in_channels, num_frames=2):
    """Inflate a first-conv weight (O, 3, k, k) to (O, in_channels, k, k).

    W' = [W / F, ..., W / F (F times), 0 (in_channels - 3F channels)] along dim 1, for
    an input [I_1, ..., I_F, XYZ...] (frames first, then the XYZ point clouds). Then
    conv(W', x) = conv(W, (1/F) sum_f I_f): a model fed the same frame F times
    responds exactly like the 3-channel model, whatever the XYZ channels hold.

    Args:
        weight (Tensor): (O, 3, k, k).
        in_channels (int): channels of the model's stem, >= 3 * num_frames.
        num_frames (int): F.
    Returns:
        Tensor: (O, in_channels, k, k), same dtype.
    """
    if weight.dim() != 4 or weight.shape[1] != 3:
        raise ValueError("inflate_stem_weight expects (O, 3, k, k), got {}".format(
            tuple(weight.shape)))
    if in_channels < 3 * num_frames:
        raise ValueError("a stem of {} channels cannot hold {} frames of 3 channels".format(
            in_channels, num_frames))
    frames = [weight / num_frames] * num_frames
    extra = weight.new_zeros((weight.shape[0], in_channels - 3 * num_frames) + weight.shape[2:])
    return torch.cat(frames + [extra], dim=1)
