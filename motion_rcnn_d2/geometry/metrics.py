"""Optical flow metrics (docs/method.md section 8): average end-point error and Fl-all.

Per valid pixel: EPE = ||flow - flow*||_2 (pixels). A pixel is an outlier (KITTI 2015 rule) when
EPE > 3 px AND EPE > 0.05 ||flow*||_2. Over a set of valid pixels (pooled over all images of a
data set, not averaged per image):

    AEE = sum EPE / count,    Fl-all = #outliers / count   (a fraction in [0, 1]).

With count == 0 both are float('nan') (no pixel to judge; 0 would look like a perfect result).
Accumulate `flow_error_sums` over images and finish with `flow_metrics_from_sums`.
"""
import torch

__all__ = ["flow_error_sums", "flow_metrics", "flow_metrics_from_sums"]

OUTLIER_ABS_PX = 3.0  # KITTI 2015 Fl: absolute end-point error threshold, pixels
OUTLIER_REL = 0.05  # KITTI 2015 Fl: relative threshold, fraction of the GT flow magnitude


def flow_error_sums(flow, gt, valid):
    """Sums for AEE and Fl-all over the valid pixels of a batch.

    Args:
        flow: (B, 2, H, W) predicted flow, pixels.
        gt: (B, 2, H, W) ground-truth flow, pixels.
        valid: (B, H, W) bool, pixels with ground truth.
    Returns:
        dict of 0-d tensors: "epe_sum" (float64, pixels; sum of EPE), "outliers" (int64; number of
        valid pixels with EPE > 3 and EPE > 0.05 |gt|), "count" (int64; number of valid pixels).
    """
    if flow.shape != gt.shape or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(
            f"flow {tuple(flow.shape)} and gt {tuple(gt.shape)} must both be (B, 2, H, W)"
        )
    if valid.shape != flow.shape[:1] + flow.shape[2:]:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, expected (B, H, W) = "
                         f"{tuple(flow.shape[:1] + flow.shape[2:])}")
    valid = valid.bool()
    epe = torch.linalg.vector_norm((flow - gt).double(), dim=1)
    magnitude = torch.linalg.vector_norm(gt.double(), dim=1)
    outlier = (epe > OUTLIER_ABS_PX) & (epe > OUTLIER_REL * magnitude) & valid
    return {
        "epe_sum": epe[valid].sum(),
        "outliers": outlier.sum(),
        "count": valid.sum(),
    }


def flow_metrics_from_sums(sums):
    """AEE and Fl-all from (accumulated) `flow_error_sums`: aee = epe_sum / count (pixels),
    fl_all = outliers / count (fraction 0..1); both nan when count == 0.

    Args:
        sums: dict with "epe_sum", "outliers", "count" (tensors or numbers).
    Returns:
        dict {"aee": float, "fl_all": float, "count": int}.
    """
    count = int(sums["count"])
    if count == 0:
        return {"aee": float("nan"), "fl_all": float("nan"), "count": 0}
    return {
        "aee": float(sums["epe_sum"]) / count,
        "fl_all": float(sums["outliers"]) / count,
        "count": count,
    }


def flow_metrics(flow, gt, valid):
    """AEE (pixels) and Fl-all (fraction 0..1) over the valid pixels of a batch, pooled.

    Args:
        flow, gt: (B, 2, H, W) pixels; valid: (B, H, W) bool.
    Returns:
        dict {"aee": float, "fl_all": float, "count": int}; aee and fl_all are nan if count == 0.
    """
    return flow_metrics_from_sums(flow_error_sums(flow, gt, valid))
