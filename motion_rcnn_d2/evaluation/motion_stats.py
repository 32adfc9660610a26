"""Per-pair sums behind the motion metrics of docs/method.md section 8, and their merge and means.

The evaluator turns one (model input, model output) pair into a small `Counter` of sums keyed
by ``(group, name)``: group is ``"all"``, a class index (instance metrics, grouped by the class
of the matched GT object) or ``"image"`` (camera and flow metrics). Sums of all pairs of all
ranks are added (`merge_partial_sums`) and divided once (`summarize_sums`), so every mean is
over all matched instances / pairs / valid pixels of the whole data set, never per image.

Sums per instance group (a "matched detection" is a detection whose highest-IoU GT box has
IoU >= the threshold; two detections matching the same GT object both count):
- ``detections`` (per predicted class), ``gt`` (per GT class), ``matched``;
- ``rot_err_sum`` (deg) / ``rot_count``: angle of R*^-1 R = arccos(clip((tr(R*^T R) - 1)/2, -1, 1));
- ``trans_err_sum`` (m) / ``trans_count``: ||t* - t||_2;  ``pivot_err_sum`` (m) / ``pivot_count``;
- ``moving_tp`` / ``moving_pred`` / ``moving_gt``: matched detections predicted AND truly moving /
  predicted moving (score > threshold) / truly moving, for O_pr = tp / pred and O_rc = tp / gt.
Sums of group "image": ``images``; ``cam_rot_err_sum`` (deg), ``cam_trans_err_sum`` (m),
``cam_count``; flow ``{region}_epe_sum`` (px), ``{region}_outliers``, ``{region}_count`` for the
regions ``all``, ``fg`` (inside any GT instance mask) and ``bg`` (outside all of them).
"""
from collections import Counter

import torch
import torch.nn.functional as F

from detectron2.structures import BitMasks, PolygonMasks, pairwise_iou

from ..geometry.metrics import flow_error_sums, flow_metrics_from_sums
from ..geometry.rotations import rotation_angle_deg

__all__ = [
    "match_detections",
    "instance_motion_sums",
    "camera_motion_sums",
    "flow_sums",
    "resize_flow",
    "merge_partial_sums",
    "summarize_sums",
]

FLOW_REGIONS = ("all", "fg", "bg")


def match_detections(pred_boxes, gt_boxes, iou_threshold=0.5):
    """Match each detection to the GT box of highest IoU, kept if IoU >= `iou_threshold`.

    Args:
        pred_boxes: `Boxes` (N, 4) XYXY pixels; gt_boxes: `Boxes` (M, 4), same image size.
    Returns:
        (gt_index (N,) int64, matched (N,) bool): gt_index is -1 where unmatched.
    """
    n = len(pred_boxes)
    device = pred_boxes.tensor.device
    if n == 0 or len(gt_boxes) == 0:
        return torch.full((n,), -1, dtype=torch.int64, device=device), torch.zeros(
            n, dtype=torch.bool, device=device
        )
    iou = pairwise_iou(pred_boxes, gt_boxes.to(device))  # (N, M)
    best_iou, best = iou.max(dim=1)
    matched = best_iou >= iou_threshold
    return torch.where(matched, best, torch.full_like(best, -1)), matched


def _rescale_boxes(gt_instances, size):
    """GT boxes of the resized input image, scaled to `size` = (H, W) of the original image."""
    boxes = gt_instances.gt_boxes.clone()
    height, width = gt_instances.image_size
    if (height, width) != tuple(size):
        boxes.scale(size[1] / width, size[0] / height)
    return boxes


def instance_motion_sums(pred, gt, iou_threshold=0.5, moving_threshold=0.5, score_threshold=0.0):
    """Instance metric sums of one pair (see the module docstring for the names).

    Args:
        pred: `Instances` at the original size: pred_boxes, pred_classes and, when the model
            predicts motion, pred_rotations (N,3,3), pred_translations (N,3) m, pred_pivots (N,3) m,
            pred_moving_scores (N,) probability. Optional `scores` (N,) filtered by `score_threshold`.
        gt: `Instances` at the input (possibly resized) size: gt_boxes, gt_classes and optionally
            gt_rotations, gt_translations, gt_pivots, gt_moving (bool). None = no GT.
        iou_threshold: minimum IoU for a match. moving_threshold: predicted moving when the
            probability is > this.
    Returns:
        `Counter` {(group, name): number}, group "all" or a class index.
    """
    sums = Counter()
    if pred.has("scores") and score_threshold > 0:
        pred = pred[pred.scores >= score_threshold]
    pred_classes = pred.pred_classes.tolist()
    for c in pred_classes:
        sums["all", "detections"] += 1
        sums[c, "detections"] += 1
    if gt is None:
        return sums
    gt_classes = gt.gt_classes.tolist()
    for c in gt_classes:
        sums["all", "gt"] += 1
        sums[c, "gt"] += 1
    gt_boxes = _rescale_boxes(gt, pred.image_size)
    gt_index, matched = match_detections(pred.pred_boxes, gt_boxes, iou_threshold)
    keep = matched.nonzero().flatten()
    if len(keep) == 0:
        return sums
    det = pred[keep]
    target = gt[gt_index[keep].to(gt.gt_classes.device)]
    groups = target.gt_classes.tolist()
    per_instance = {"matched": [1.0] * len(groups)}
    if det.has("pred_rotations") and target.has("gt_rotations"):
        r_pred, r_gt = _double(det.pred_rotations), _double(target.gt_rotations, det.pred_rotations)
        per_instance["rot_err_sum"] = rotation_angle_deg(r_gt, r_pred).tolist()
        per_instance["rot_count"] = [1.0] * len(groups)
    for key, pred_field, gt_field in (("trans", "pred_translations", "gt_translations"),
                                      ("pivot", "pred_pivots", "gt_pivots")):
        if det.has(pred_field) and target.has(gt_field):
            p = _double(det.get(pred_field))
            error = torch.linalg.vector_norm(_double(target.get(gt_field), p) - p, dim=-1)
            per_instance[key + "_err_sum"] = error.tolist()
            per_instance[key + "_count"] = [1.0] * len(groups)
    if det.has("pred_moving_scores") and target.has("gt_moving"):
        predicted = (det.pred_moving_scores > moving_threshold).cpu()
        truth = target.gt_moving.bool().cpu()
        per_instance["moving_tp"] = (predicted & truth).float().tolist()
        per_instance["moving_pred"] = predicted.float().tolist()
        per_instance["moving_gt"] = truth.float().tolist()
    for name, values in per_instance.items():
        for group, value in zip(groups, values):
            sums["all", name] += value
            sums[group, name] += value
    return sums


def _double(x, like=None):
    """`x` as a float64 tensor on the device of `like` (or its own)."""
    device = like.device if like is not None else None
    return torch.as_tensor(x, dtype=torch.float64, device=device)


def camera_motion_sums(pred, gt):
    """Camera metric sums of one pair: E_R^cam = angle of R*_cam^-1 R_cam (deg) and
    E_t^cam = ||t*_cam - t_cam|| (m).

    Args:
        pred, gt: dicts with "rotation" (3,3) and "translation" (3,) (tensors or lists).
    Returns:
        `Counter` {("image", "cam_rot_err_sum"|"cam_trans_err_sum"|"cam_count"): number}.
    """
    r_pred = _double(pred["rotation"])
    t_pred = _double(pred["translation"]).reshape(3)
    r_gt, t_gt = _double(gt["rotation"], r_pred), _double(gt["translation"], r_pred).reshape(3)
    return Counter({
        ("image", "cam_rot_err_sum"): float(rotation_angle_deg(r_gt, r_pred)),
        ("image", "cam_trans_err_sum"): float(torch.linalg.vector_norm(t_gt - t_pred)),
        ("image", "cam_count"): 1,
    })


def resize_flow(flow, valid, size):
    """Resize a flow field and its validity to `size` = (H', W') by nearest neighbour
    ("nearest-exact": pixel centres aligned), scaling u by W'/W and v by H'/H.

    Args:
        flow: (2, H, W) pixels; valid: (H, W) bool.
    Returns:
        (flow (2, H', W') pixels, valid (H', W') bool); the inputs themselves when sizes match.
    """
    height, width = flow.shape[-2:]
    if (height, width) == tuple(size):
        return flow, valid
    scale = flow.new_tensor([size[1] / width, size[0] / height]).view(2, 1, 1)
    flow = F.interpolate(flow[None].float(), size=tuple(size), mode="nearest-exact")[0] * scale
    return flow, _resize_mask(valid, size)


def _resize_mask(mask, size):
    """(H, W) bool -> (H', W') bool, nearest neighbour."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask.bool()
    return F.interpolate(mask[None, None].float(), size=tuple(size), mode="nearest-exact")[0, 0] > 0.5


def _union_of_masks(gt, device):
    """(H, W) bool union of the GT instance masks at the input size; None when unknown."""
    if gt is None or not gt.has("gt_masks"):
        return None
    height, width = gt.image_size
    masks = gt.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width)
    tensor = masks.tensor if isinstance(masks, BitMasks) else torch.as_tensor(masks)
    if tensor.shape[0] == 0:
        return torch.zeros((height, width), dtype=torch.bool, device=device)
    return tensor.to(device).bool().any(dim=0)


def flow_sums(pred_flow, gt_flow, gt_valid, gt_instances=None):
    """Flow metric sums of one pair over all GT-valid pixels, and split into foreground (inside
    any GT instance mask) and background when `gt_instances` has gt_masks.

    Every pixel with valid GT flow is scored, like the KITTI benchmark: where the model marked its
    own flow invalid it still counts with the flow it wrote there (0 by the output contract).
    GT at the input size is resized to the prediction's size first (`resize_flow`).

    Args:
        pred_flow: (2, H, W) pixels at the original size. gt_flow: (2, h, w) pixels and gt_valid:
            (h, w) bool at the input size. gt_instances: `Instances` at the input size, or None.
    Returns:
        `Counter` {("image", "{region}_epe_sum" | "{region}_outliers" | "{region}_count"): number};
        fg/bg only when the masks are known.
    """
    size = tuple(pred_flow.shape[-2:])
    gt_flow, gt_valid = resize_flow(gt_flow.to(pred_flow.device), gt_valid.to(pred_flow.device), size)
    regions = {"all": gt_valid}
    foreground = _union_of_masks(gt_instances, pred_flow.device)
    if foreground is not None:
        foreground = _resize_mask(foreground, size)
        regions["fg"] = gt_valid & foreground
        regions["bg"] = gt_valid & ~foreground
    sums = Counter()
    for region, valid in regions.items():
        errors = flow_error_sums(pred_flow[None].double(), gt_flow[None].double(), valid[None])
        sums["image", region + "_epe_sum"] += float(errors["epe_sum"])
        sums["image", region + "_outliers"] += int(errors["outliers"])
        sums["image", region + "_count"] += int(errors["count"])
    return sums


def merge_partial_sums(partials):
    """Add the `Counter`s of several ranks (or images) into one."""
    total = Counter()
    for partial in partials:
        total.update(partial)
    return total


def _mean(total, count):
    return float(total) / count if count > 0 else float("nan")


def _instance_metrics(sums, group, suffix, metrics):
    matched = int(sums[group, "matched"])
    metrics["num_matched" + suffix] = matched
    for key, name in (("E_R", "rot"), ("E_t", "trans"), ("E_p", "pivot")):
        count = int(sums[group, name + "_count"])
        metrics[key + suffix] = _mean(sums[group, name + "_err_sum"], count)
        metrics[key + "_count" + suffix] = count
    tp = sums[group, "moving_tp"]
    for key, name in (("O_pr", "moving_pred"), ("O_rc", "moving_gt")):
        count = int(sums[group, name])
        metrics[key + suffix] = _mean(tp, count)
        metrics[key + "_count" + suffix] = count


def summarize_sums(sums, class_names):
    """Means with counts from merged sums; a mean with count 0 is nan (nothing to measure).

    Args:
        sums: merged `Counter` of `instance_motion_sums`, `camera_motion_sums`, `flow_sums` and
            ("image", "images").
        class_names: list of names indexed by class id (Detectron2 ``thing_classes``).
    Returns:
        flat dict {name: float or int}: overall "E_R" (deg), "E_t", "E_p" (m), "O_pr", "O_rc",
        "E_R_cam" (deg), "E_t_cam" (m), "AEE" (px), "Fl_all" (fraction 0..1), "AEE_fg", "Fl_fg",
        "AEE_bg", "Fl_bg", each with "<name>_count"; "num_images", "num_detections", "num_gt",
        "num_matched"; per class "<name>-<class>" and "<name>_count-<class>" for the instance
        metrics (Detectron2's "AP-<class>" style, left out of its copypaste line).
    """
    metrics = {
        "num_images": int(sums["image", "images"]),
        "num_detections": int(sums["all", "detections"]),
        "num_gt": int(sums["all", "gt"]),
    }
    _instance_metrics(sums, "all", "", metrics)
    cam_count = int(sums["image", "cam_count"])
    metrics["E_R_cam"] = _mean(sums["image", "cam_rot_err_sum"], cam_count)
    metrics["E_t_cam"] = _mean(sums["image", "cam_trans_err_sum"], cam_count)
    metrics["E_R_cam_count"] = metrics["E_t_cam_count"] = cam_count
    for region, (aee_key, fl_key) in zip(FLOW_REGIONS, (("AEE", "Fl_all"), ("AEE_fg", "Fl_fg"),
                                                        ("AEE_bg", "Fl_bg"))):
        flow = flow_metrics_from_sums({name: sums["image", f"{region}_{name}"]
                                       for name in ("epe_sum", "outliers", "count")})
        metrics[aee_key], metrics[fl_key] = flow["aee"], flow["fl_all"]
        metrics[aee_key + "_count"] = metrics[fl_key + "_count"] = flow["count"]
    class_ids = sorted({g for g, _ in sums if isinstance(g, int)} | set(range(len(class_names))))
    for c in class_ids:
        name = class_names[c] if c < len(class_names) else f"class_{c}"
        metrics["num_detections-" + name] = int(sums[c, "detections"])
        metrics["num_gt-" + name] = int(sums[c, "gt"])
        _instance_metrics(sums, c, "-" + name, metrics)
    return metrics
