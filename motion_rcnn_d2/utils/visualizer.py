"""Pictures: optical flow, KITTI flow error, and motions drawn on Detectron2's Visualizer.

All functions take numpy arrays or tensors and return HxWx3 uint8 RGB images.
"""
import math

import numpy as np
import torch
from detectron2.utils.visualizer import ColorMode, Visualizer
from torchvision.utils import flow_to_image

from ..geometry import rotation_angle_deg

__all__ = ["flow_picture", "flow_pictures", "flow_error_picture", "draw_motions", "motion_summary"]

# KITTI 2015 devkit's error colour map: (lower, upper) bounds of the normalised error
# min(EPE / 3 px, EPE / (0.05 |flow_gt|)) and the RGB colour of that band.
_KITTI_ERROR_BANDS = (
    (0.0, 0.0625, (49, 54, 149)),
    (0.0625, 0.125, (69, 117, 180)),
    (0.125, 0.25, (116, 173, 209)),
    (0.25, 0.5, (171, 217, 233)),
    (0.5, 1.0, (224, 243, 248)),
    (1.0, 2.0, (254, 224, 144)),
    (2.0, 4.0, (253, 174, 97)),
    (4.0, 8.0, (244, 109, 67)),
    (8.0, 16.0, (215, 48, 39)),
    (16.0, math.inf, (165, 0, 38)),
)


def _hw2(flow):
    """Accept flow as HxWx2 or 2xHxW (numpy or tensor); return a float32 2xHxW tensor."""
    flow = torch.as_tensor(np.asarray(flow) if not torch.is_tensor(flow) else flow)
    flow = flow.detach().float().cpu()
    if flow.ndim != 3 or 2 not in (flow.shape[0], flow.shape[-1]):
        raise ValueError(f"flow must be HxWx2 or 2xHxW, got shape {tuple(flow.shape)}")
    return flow if flow.shape[0] == 2 else flow.permute(2, 0, 1)


def flow_picture(flow, valid=None):
    """Middlebury colour coding of one flow field (torchvision's ``flow_to_image``).

    Args:
        flow: 2xHxW or HxWx2, pixels. valid: optional HxW bool; invalid pixels are black.
    Returns:
        HxWx3 uint8 RGB, normalised by the field's largest valid flow.
    """
    return flow_pictures([flow], [valid])[0]


def flow_pictures(flows, valids=None):
    """Colour-code several same-size flow fields on ONE scale (e.g. prediction and GT).

    The fields are laid side by side into one field before ``flow_to_image``, which
    normalises by the largest norm, so equal colours mean equal flow across pictures.
    """
    flows = [_hw2(f) for f in flows]
    valids = [None] * len(flows) if valids is None else valids
    masks = [
        torch.ones(f.shape[1:], dtype=torch.bool) if v is None else _as_bool(v)
        for f, v in zip(flows, valids)
    ]
    joined = torch.cat([f * m for f, m in zip(flows, masks)], dim=2)
    img = flow_to_image(joined).permute(1, 2, 0).numpy()
    width = flows[0].shape[2]
    out = []
    for i, m in enumerate(masks):
        part = img[:, i * width:(i + 1) * width].copy()
        part[~m.numpy()] = 0
        out.append(part)
    return out


def _as_bool(mask):
    return torch.as_tensor(np.asarray(mask) if not torch.is_tensor(mask) else mask).cpu().bool()


def flow_error_picture(flow, gt, valid):
    """KITTI 2015's flow error colouring (blue = small, red = large error).

    The normalised error per pixel is e = min(EPE / 3 px, EPE / (0.05 |gt|)), so e > 1 is a
    KITTI outlier; colour bands double from 1/16 to 16. Invalid pixels are black.

    Args:
        flow, gt: 2xHxW or HxWx2, pixels. valid: HxW bool.
    Returns:
        HxWx3 uint8 RGB.
    """
    flow, gt = _hw2(flow), _hw2(gt)
    valid = _as_bool(valid).numpy()
    epe = (flow - gt).norm(dim=0).numpy()
    mag = gt.norm(dim=0).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        err = np.minimum(epe / 3.0, np.where(mag > 0, epe / (0.05 * mag), np.inf))
    img = np.zeros(epe.shape + (3,), np.uint8)
    for lo, hi, colour in _KITTI_ERROR_BANDS:
        img[(err >= lo) & (err < hi) & valid] = colour
    return img


def motion_summary(rotation, translation, moving_score):
    """One line: speed (m per frame), rotation angle (degrees), moving or still."""
    rotation = torch.as_tensor(rotation).float().reshape(3, 3)
    speed = float(torch.as_tensor(translation).float().norm())
    angle = float(rotation_angle_deg(torch.eye(3), rotation))
    state = "moving" if float(moving_score) > 0.5 else "still"
    return f"{speed:.2f} m/fr {angle:.1f} deg {state}"


def draw_motions(image_rgb, instances, metadata=None, camera_motion=None):
    """Detectron2's Visualizer drawing of the instances, each labelled with its motion.

    Args:
        image_rgb: HxWx3 uint8 RGB frame t.
        instances: Detectron2 ``Instances`` on CPU with pred_boxes, scores, pred_classes,
            pred_masks and the motion fields of the Motion R-CNN output.
        metadata: the data set's ``Metadata`` (thing_classes).
        camera_motion: optional dict with "rotation", "translation", "moving_score": drawn
            in the top-left corner.
    Returns:
        HxWx3 uint8 RGB.
    """
    vis = Visualizer(image_rgb, metadata, instance_mode=ColorMode.IMAGE)
    names = (metadata.get("thing_classes", None) if metadata is not None else None) or []
    labels = []
    for i in range(len(instances) if instances.get_fields() else 0):  # FlowNetS: no fields
        c = int(instances.pred_classes[i])
        name = names[c] if c < len(names) else str(c)
        label = f"{name} {float(instances.scores[i]):.2f}"
        if instances.has("pred_translations"):
            label += " " + motion_summary(
                instances.pred_rotations[i], instances.pred_translations[i],
                instances.pred_moving_scores[i],
            )
        labels.append(label)
    boxes = instances.pred_boxes.tensor.numpy() if instances.has("pred_boxes") else None
    masks = instances.pred_masks.numpy() if instances.has("pred_masks") else None
    vis.overlay_instances(boxes=boxes, masks=masks, labels=labels)
    if camera_motion is not None:
        text = "camera " + motion_summary(
            camera_motion["rotation"], camera_motion["translation"],
            camera_motion.get("moving_score", 1.0),
        )
        vis.draw_text(text, (4, 4), horizontal_alignment="left", font_size=max(8, image_rgb.shape[0] // 25))
    return vis.output.get_image()

