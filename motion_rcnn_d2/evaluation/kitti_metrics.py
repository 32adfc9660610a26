"""The KITTI 2015 scene flow benchmark's metrics, as its official devkit computes them
(devkit_scene_flow: readme.txt, cpp/evaluate_scene_flow.cpp, cpp/io_disp.h, cpp/io_flow.h).

Outlier rule (evaluate_scene_flow.cpp, ABS_THRESH = 3, REL_THRESH = 0.05): a pixel's estimate is
bad when its error is > 3 px AND > 5 % of the ground truth's magnitude,

    D:   |d* - d| > 3  and  |d* - d| / |d*| > 0.05          (disparity, px)
    Fl:  ||f* - f|| > 3  and  ||f* - f|| / ||f*|| > 0.05    (optical flow end-point error, px)
    SF:  D1 outlier or D2 outlier or Fl outlier,

over the pixels with valid ground truth (for SF: valid d*_0, d*_1 AND f*), split by KITTI's
``obj_map`` into background (id 0) and foreground (id > 0, the vehicles); each figure is
outliers / pixels of the whole set (pooled, not averaged per image), in percent. D1 is the
disparity of frame t (disp_occ_0), D2 the disparity at t+1 of each frame-t pixel, in frame t's
grid (disp_occ_1). These are the devkit's "occ" figures (all pixels with GT, occluded ones
included); the same computation over the non-occluded GT (flow_noc, disp_noc_0, disp_noc_1:
fewer pixels, same estimate) gives its "noc" figures (`summarize_kitti_counts` with suffix
"_noc", e.g. "D1-all_noc"). Missing estimates are filled first by the devkit's
``interpolateBackground`` (`interpolate_background`) and then scored like the others; the
density is the share of GT pixels that had an estimate before filling (for SF: an estimate of
d_0, as in the devkit).

The devkit scores the 16-bit PNGs of a submission; scored in memory, an estimate is not rounded to
1/64 px (flow) or 1/256 px (disparity) first.
"""
from collections import Counter

import numpy as np

from ..geometry.metrics import OUTLIER_ABS_PX, OUTLIER_REL

__all__ = ["KITTI_METRICS", "KITTI_REGIONS", "interpolate_background", "kitti_outliers",
           "kitti_pair_counts", "summarize_kitti_counts"]

KITTI_METRICS = ("D1", "D2", "Fl", "SF")
KITTI_REGIONS = ("bg", "fg", "all")


def interpolate_background(values, valid):
    """The devkit's ``interpolateBackground`` of a disparity map or flow field.

    Row by row, a run of missing pixels between two valid ones gets their minimum (per channel:
    the background, for disparities the farther one); runs at the row's ends copy the nearest
    valid pixel. Then, column by column, rows above the first valid row copy it and rows below
    the last valid row copy that one. Rows without any valid pixel between valid rows stay
    missing (they keep their value: the devkit's -1 for disparities, 0 for flow).

    Args:
        values: (H, W, C) float (C = 1: disparity, C = 2: flow). valid: (H, W) bool.
    Returns:
        (filled values (H, W, C), valid after filling (H, W) bool).
    """
    values = np.array(values, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    height, width = valid.shape
    columns = np.arange(width)
    previous = np.maximum.accumulate(np.where(valid, columns, -1), axis=1)
    following = np.minimum.accumulate(np.where(valid, columns, width)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(height)[:, None]
    left = values[rows, np.clip(previous, 0, width - 1)]
    right = values[rows, np.clip(following, 0, width - 1)]
    has_left, has_right = previous >= 0, following < width
    fill = np.where((has_left & has_right)[..., None], np.minimum(left, right),
                    np.where(has_left[..., None], left, right))
    filled = ~valid & (has_left | has_right)
    values[filled] = fill[filled]
    valid = valid | filled
    row_valid = valid.any(axis=1)
    if row_valid.any():
        first = int(np.argmax(row_valid))
        last = height - 1 - int(np.argmax(row_valid[::-1]))
        values[:first], values[last + 1:] = values[first], values[last]
        valid[:first], valid[last + 1:] = True, True
    return values, valid


def kitti_outliers(error, gt_magnitude):
    """error > 3 px and error > 5 % of the GT magnitude (elementwise, bool)."""
    return (error > OUTLIER_ABS_PX) & (error > OUTLIER_REL * gt_magnitude)


def _fill(estimate, valid, missing_value):
    estimate = np.where(valid[..., None], estimate, missing_value)
    return interpolate_background(estimate, valid)[0]


def kitti_pair_counts(obj_map, flow=None, disparities=None):
    """Outlier and pixel counts of one pair.

    Args:
        obj_map: (H, W) int, KITTI's object map (0 = background).
        flow: None or (gt (H, W, 2) px, gt_valid (H, W), estimate (H, W, 2) px, est_valid (H, W)).
        disparities: None or a pair (t, t+1) of (gt (H, W) px, gt_valid, estimate (H, W) px,
            est_valid), t+1 in frame t's grid.
    Returns:
        `Counter` {(metric, region, "outliers" | "pixels" | "estimated"): int} for the metrics
        "Fl", "D1", "D2" given and "SF" when both are.
    """
    foreground = np.asarray(obj_map) != 0
    outliers, scored, estimated = {}, {}, {}
    if flow is not None:
        gt, gt_valid, estimate, est_valid = (np.asarray(a) for a in flow)
        filled = _fill(estimate.astype(np.float64), est_valid, 0.0)
        error = np.linalg.norm(gt.astype(np.float64) - filled, axis=-1)
        outliers["Fl"] = kitti_outliers(error, np.linalg.norm(gt.astype(np.float64), axis=-1))
        scored["Fl"], estimated["Fl"] = gt_valid, est_valid
    if disparities is not None:
        for name, (gt, gt_valid, estimate, est_valid) in zip(("D1", "D2"), disparities):
            gt = np.asarray(gt, np.float64)
            filled = _fill(np.asarray(estimate, np.float64)[..., None], est_valid, -1.0)[..., 0]
            outliers[name] = kitti_outliers(np.abs(gt - filled), np.abs(gt))
            scored[name], estimated[name] = np.asarray(gt_valid), np.asarray(est_valid)
    if "Fl" in outliers and "D1" in outliers:
        outliers["SF"] = outliers["D1"] | outliers["D2"] | outliers["Fl"]
        scored["SF"] = scored["D1"] & scored["D2"] & scored["Fl"]
        estimated["SF"] = estimated["D1"]
    counts = Counter()
    for name in outliers:
        for region, mask in (("bg", ~foreground), ("fg", foreground),
                             ("all", np.ones_like(foreground))):
            pixels = scored[name] & mask
            counts[name, region, "outliers"] += int((outliers[name] & pixels).sum())
            counts[name, region, "pixels"] += int(pixels.sum())
            counts[name, region, "estimated"] += int((estimated[name] & pixels).sum())
    return counts


def summarize_kitti_counts(counts, suffix=""):
    """Percentages from summed `kitti_pair_counts`: "<metric>-<region>" = 100 outliers / pixels
    (percent; nan when there are no pixels), "<metric>-<region>_count" = pixels (a count), and
    "<metric>_density" = 100 estimated / pixels over all regions (percent), for each metric that
    was counted; `suffix` is appended to every name (the evaluator's "_noc" figures)."""
    metrics = {}
    for name in KITTI_METRICS:
        if not any(key[0] == name for key in counts):
            continue
        for region in KITTI_REGIONS:
            pixels = counts[name, region, "pixels"]
            metrics[f"{name}-{region}{suffix}"] = (
                100.0 * counts[name, region, "outliers"] / pixels if pixels else float("nan"))
            metrics[f"{name}-{region}_count{suffix}"] = int(pixels)
        pixels = counts[name, "all", "pixels"]
        metrics[f"{name}_density{suffix}"] = (100.0 * counts[name, "all", "estimated"] / pixels
                                              if pixels else float("nan"))
    return metrics
