"""`MotionEvaluator`: the motion and flow metrics of docs/method.md section 8 as a Detectron2
`DatasetEvaluator` (works under distributed evaluation: sums are gathered from all ranks)."""
import json
import logging
import math
import os
from collections import OrderedDict

import torch
from tabulate import tabulate

from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm

from ..utils.files import open_atomically
from .motion_stats import (
    camera_motion_sums,
    flow_sums,
    instance_motion_sums,
    merge_partial_sums,
    summarize_sums,
)

__all__ = ["MotionEvaluator"]

RESULTS_FILE = "motion_metrics.json"


class MotionEvaluator(DatasetEvaluator):
    """E_R, E_t, E_p, O_pr, O_rc (per class and overall), E_R^cam, E_t^cam, AEE and Fl-all (all
    valid pixels, foreground, background), each with its count.

    Inputs are the model-input dicts (GT `instances` at the resized input size with gt_boxes,
    gt_classes and optionally gt_masks, gt_rotations, gt_translations, gt_pivots, gt_moving;
    `camera_motion` {"rotation", "translation"}; `flow` (2,h,w) px and `flow_valid` (h,w) at the
    input size). Outputs are the model-output dicts at the original size. What is evaluated
    follows what both sides carry:
    - instance metrics (and the num_detections / num_gt counts) only for pairs whose output has
      `instances`; FlowNetS and SfM-Net outputs (no `instances`, SfM-Net's "motions" are not tied
      to objects) get none. An input without GT `instances` counts its detections as unmatched;
    - camera metrics when both have `camera_motion`;
    - flow metrics when the output has `flow` and the input `flow` (GT resized to the output's
      size by nearest neighbour, u and v scaled by the size ratio; see `motion_stats.flow_sums`).

    Matching: each detection goes to the GT box of highest IoU (GT boxes rescaled to the original
    size), kept if IoU >= `iou_threshold`; two detections matching one GT object both count.
    Instance metrics are grouped by the matched GT object's class. O_pr and O_rc are precision and
    recall of the moving flag among matched detections (predicted moving: pred_moving_scores >
    `moving_threshold`; truth: gt_moving).

    Every mean is over all matched detections / pairs / valid GT-flow pixels of the whole data set,
    not per image. A mean whose count is 0 (no detections, no GT, no moving object, no flow) is
    nan (never a division by zero); in the JSON file nan is written as null.

    `evaluate()` returns ``OrderedDict(motion={name: number})`` on the main process ({} on the
    others), logs a table and writes ``output_dir/motion_metrics.json`` (atomically). Key names:
    `motion_stats.summarize_sums`.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None, iou_threshold=0.5,
                 moving_threshold=0.5, score_threshold=0.0):
        """
        Args:
            dataset_name: registered data set; its metadata ``thing_classes`` name the classes.
            distributed: gather the sums of all ranks and evaluate on the main process.
            output_dir: folder for motion_metrics.json (None: no file).
            iou_threshold: minimum box IoU for a detection to match a GT object
                (docs/method.md section 8: 0.5).
            moving_threshold: a detection is predicted moving when its moving probability is > this
                (cfg.MODEL.MOTION_RCNN.MOVING_THRESHOLD).
            score_threshold: detections with a score below this are ignored; 0 keeps every
                detection the model returned (its own TEST score threshold already applied).
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._iou_threshold = iou_threshold
        self._moving_threshold = moving_threshold
        self._score_threshold = score_threshold
        self._class_names = list(MetadataCatalog.get(dataset_name).get("thing_classes", None) or [])
        self._logger = logging.getLogger(__name__)
        self.reset()

    def reset(self):
        self._sums = merge_partial_sums([])

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            self._sums.update(self.pair_sums(inp, out))

    def pair_sums(self, inp, out):
        """The `Counter` of sums of one (input dict, output dict) pair."""
        sums = merge_partial_sums([])
        sums["image", "images"] += 1
        gt_instances = inp.get("instances")
        if "instances" in out:
            sums.update(instance_motion_sums(
                out["instances"], gt_instances, self._iou_threshold, self._moving_threshold,
                self._score_threshold))
        if "camera_motion" in out and "camera_motion" in inp:
            sums.update(camera_motion_sums(out["camera_motion"], inp["camera_motion"]))
        if "flow" in out and "flow" in inp:
            gt_valid = inp.get("flow_valid")
            if gt_valid is None:
                gt_valid = torch.ones(inp["flow"].shape[-2:], dtype=torch.bool)
            sums.update(flow_sums(out["flow"], inp["flow"], gt_valid, gt_instances))
        return sums

    def evaluate(self):
        partials = gather_partials(self._sums, self._distributed)
        if partials is None:
            return {}
        metrics = summarize_sums(merge_partial_sums(partials), self._class_names)
        if metrics["num_images"] == 0:
            self._logger.warning(f"[MotionEvaluator] no pairs of '{self._dataset_name}' were "
                                 "processed: every metric is nan.")
        self._logger.info("\n" + format_tables(metrics, self._class_names, self._dataset_name))
        results = OrderedDict(motion=metrics)
        if self._output_dir:
            write_json_atomically(results, os.path.join(self._output_dir, RESULTS_FILE))
        return results


def _cell(metrics, key, suffix="", fmt="{:.3f}"):
    value = metrics[key + suffix]
    count = metrics[key + "_count" + suffix]
    return f"{fmt.format(value) if not math.isnan(value) else 'nan'} ({count})"


def format_tables(metrics, class_names, dataset_name):
    """The log text: a per-class instance table and an image-level (camera, flow) table."""
    rows = []
    names = ["all"] + [n for n in class_names if f"num_matched-{n}" in metrics]
    for name in names:
        s = "" if name == "all" else "-" + name
        det = metrics["num_detections" + s]
        gt = metrics["num_gt" + s]
        rows.append([name, det, gt, metrics["num_matched" + s]] + [
            _cell(metrics, k, s) for k in ("E_R", "E_t", "E_p", "O_pr", "O_rc")])
    instance_table = tabulate(
        rows, headers=["class", "detections", "GT", "matched", "E_R deg", "E_t m", "E_p m",
                       "O_pr", "O_rc"], tablefmt="pipe")
    image_rows = [
        ["E_R^cam deg", _cell(metrics, "E_R_cam")],
        ["E_t^cam m", _cell(metrics, "E_t_cam")],
        ["AEE px (all / fg / bg)", " / ".join(_cell(metrics, k) for k in ("AEE", "AEE_fg", "AEE_bg"))],
        ["Fl-all % (all / fg / bg)", " / ".join(
            _cell({**metrics, k: metrics[k] * 100}, k, fmt="{:.2f}") for k in ("Fl_all", "Fl_fg", "Fl_bg"))],
    ]
    image_table = tabulate(image_rows, headers=["metric", "mean (count)"], tablefmt="pipe")
    return (
        f"Motion metrics of '{dataset_name}' ({metrics['num_images']} pairs). Means over ALL "
        "matched detections (IoU >= threshold) of the whole set, not per image; the count is in "
        "parentheses; nan = nothing to measure.\n" + instance_table + "\n"
        "Camera means over all pairs, flow means over all valid GT-flow pixels of the whole set "
        "(fg = inside any GT instance mask):\n" + image_table
    )


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def gather_partials(local, distributed):
    """An evaluator's per-process partial results: ``[local]``, or with ``distributed`` every
    process's on the main process (a list, one per rank) and None on the others."""
    if not distributed:
        return [local]
    comm.synchronize()
    partials = comm.gather(local, dst=0)
    return partials if comm.is_main_process() else None


def write_json_atomically(results, path):
    """Write `results` (nan -> null, strict JSON) to `path` atomically (`open_atomically`), so a
    reader never sees a half-written file."""
    with open_atomically(path, "w") as f:
        json.dump(_json_safe(results), f, indent=2, allow_nan=False)
