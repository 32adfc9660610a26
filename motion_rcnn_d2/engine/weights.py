"""Weight conversions for loading ImageNet/COCO ResNets into Motion R-CNN (docs/method.md
section 2): torchvision's ResNet names to Detectron2's, Detectron2's name heuristics run per
top-level module, and a 3-channel first conv inflated to the multi-frame stem. Functions on
state dicts, tensors and models, used by `MotionCheckpointer`."""
import re
from collections import defaultdict

import torch
from detectron2.checkpoint.c2_model_loading import (
    align_and_update_state_dicts,
    convert_c2_detectron_names,
)
from detectron2.modeling.backbone.resnet import BasicStem, BottleneckBlock

__all__ = ["is_torchvision_resnet", "convert_torchvision_resnet_names", "torchvision_checkpoint",
           "inflate_stem_weight", "multi_frame_stems", "inflate_stems", "align_per_module"]

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


def torchvision_checkpoint(state_dict, model, input_format, filename, logger):
    """A torchvision ResNet state dict as a checkpoint for `model` (fvcore's dict with "model",
    "__author__" "torchvision" and name heuristics on). torchvision's weights take RGB: for BGR
    frames (`input_format`, cfg.INPUT.FORMAT) the first conv's input channels are reversed.
    Logs what it did and a warning when `model`'s bottlenecks stride in the 1x1 conv
    (torchvision's stride in the 3x3)."""
    converted = convert_torchvision_resnet_names(state_dict)
    if input_format == "BGR":
        converted["stem.conv1.weight"] = converted["stem.conv1.weight"].flip(1)
        logger.info("{}: torchvision ResNet (RGB) loaded for BGR input: first conv's "
                    "input channels reversed.".format(filename))
    elif input_format != "RGB":
        logger.warning("{}: torchvision ResNet expects RGB but INPUT.FORMAT is {}; "
                       "first conv loaded unchanged.".format(filename, input_format))
    if any(isinstance(m, BottleneckBlock) and m.conv1.stride != (1, 1) for m in model.modules()):
        logger.warning(
            "torchvision bottleneck ResNets have the stride in the 3x3 conv, this model "
            "in the 1x1 conv: set MODEL.RESNETS.STRIDE_IN_1X1 False for these weights.")
    return {"model": converted, "__author__": "torchvision", "matching_heuristics": True}

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


def multi_frame_stems(model):
    """{state-dict name of each Detectron2 BasicStem's conv1 weight with != 3 inputs: shape}."""
    stems = {}
    for name, module in model.named_modules():
        if isinstance(module, BasicStem) and module.conv1.in_channels != 3:
            stems[(name + "." if name else "") + "conv1.weight"] = tuple(module.conv1.weight.shape)
    return stems


def inflate_stems(state_dict, stems, num_frames, inflate, logger):
    """Inflate, in `state_dict`, each 3-channel weight of `stems` (:func:`multi_frame_stems`)
    with :func:`inflate_stem_weight`; with `inflate` False leave it (warned). Other shapes are
    left for Detectron2 to report and skip."""
    for key, shape in stems.items():
        weight = state_dict.get(key)
        if weight is None or tuple(weight.shape) == shape:
            continue
        if weight.dim() != 4 or weight.shape[1] != 3 or shape[1] < 3 * num_frames:
            continue
        if not inflate:
            logger.warning(
                "{}: checkpoint has 3 input channels, model {}; not inflated "
                "(MODEL.RESNETS.INFLATE_STEM is False), left as initialised.".format(
                    key, shape[1]))
            continue
        state_dict[key] = inflate_stem_weight(weight, shape[1], num_frames)
        logger.info(
            "Inflated {} from 3 to {} input channels: the 3-channel filters copied to "
            "each of {} frames and divided by {}, the other {} (XYZ) channels zero.".format(
                key, shape[1], num_frames, num_frames, shape[1] - 3 * num_frames))


def _suffix_match(model_key, ckpt_key):
    # Detectron2's matching rule: the checkpoint name is a whole-component suffix
    return model_key == ckpt_key or model_key.endswith("." + ckpt_key)


def align_per_module(model_state, ckpt, stems, c2_conversion, logger):
    """Detectron2's name heuristics (``align_and_update_state_dicts``, after Caffe2's name
    conversion when `c2_conversion`) run per top-level module of the model (backbone,
    roi_heads, ...), so one checkpoint stage can initialise two modules (e.g. the C4 variant's
    backbone.res5 and roi_heads.res5 from ImageNet's res5). Multi-frame `stems` are matched as
    if they had 3 input channels (inflated afterwards). Returns the state dict with the model's
    names, plus the checkpoint weights no module used (under their own names)."""
    if c2_conversion:
        ckpt, _ = convert_c2_detectron_names(ckpt)
    groups = defaultdict(dict)
    for key, value in model_state.items():
        groups[key.split(".", 1)[0]][key] = value[:, :3] if key in stems else value
    aligned, unused = {}, None
    for group in groups.values():
        if not any(_suffix_match(m, c) for m in group for c in ckpt):
            continue
        result = align_and_update_state_dicts(group, ckpt, c2_conversion=False)
        aligned.update({k: v for k, v in result.items() if k in group})
        leftover = {k for k in result if k not in group}  # checkpoint names
        unused = leftover if unused is None else unused & leftover
    if unused is None:
        logger.warning("No weights in the checkpoint matched the model.")
        return ckpt
    aligned.update({k: ckpt[k] for k in unused})  # reported as unused by Detectron2
    return aligned
