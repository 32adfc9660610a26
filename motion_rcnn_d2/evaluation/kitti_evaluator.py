"""`KittiSceneFlowEvaluator`: KITTI 2015's own figures (D1, D2, Fl, SF; bg / fg / all, over all
GT pixels and over the non-occluded ones) for a data set with KITTI's ground truth, as a
Detectron2 `DatasetEvaluator` beside `MotionEvaluator`."""
import logging
import math
import os
from collections import Counter, OrderedDict

import numpy as np
from tabulate import tabulate

from detectron2.data import DatasetCatalog
from detectron2.evaluation import DatasetEvaluator

from ..data import formats
from .kitti_metrics import (KITTI_METRICS, KITTI_REGIONS, kitti_pair_counts,
                            summarize_kitti_counts)
from .motion_evaluator import gather_partials, write_json_atomically

__all__ = ["KittiSceneFlowEvaluator", "estimated_disparities"]

RESULTS_FILE = "kitti_metrics.json"
GT_KEYS = ("flow_file_name", "obj_map_file_name", "disparity_gt_file_name",
           "disparity_next_gt_file_name", "disparity_to_depth")
# the non-occluded GT (flow_noc, disp_noc_0, disp_noc_1) in place of each "all pixels" GT file
NOC_KEYS = {"flow_file_name": "flow_noc_file_name",
            "disparity_gt_file_name": "disparity_noc_gt_file_name",
            "disparity_next_gt_file_name": "disparity_next_noc_gt_file_name"}


def estimated_disparities(output, fx_baseline):
    """Disparities (px) implied by a model's 3D result: d_0 = fx b / Z at t and d_1 = fx b /
    (Z + dZ) at t+1, both in frame t's grid (as KITTI's disp_0 / disp_1), with validity (Z finite
    and > 0); None when the output has no "points" / "scene_flow".

    Returns:
        ((d_0 (H, W), valid_0 (H, W)), (d_1, valid_1)) as numpy arrays, 0 where invalid.
    """
    if "points" not in output or "scene_flow" not in output:
        return None
    depth = output["points"][2].detach().cpu().double().numpy()
    depth_next = depth + output["scene_flow"][2].detach().cpu().double().numpy()
    result = []
    for z in (depth, depth_next):
        valid = np.isfinite(z) & (z > 0)
        disparity = np.zeros_like(z)
        np.divide(fx_baseline, z, out=disparity, where=valid)
        result.append((disparity, valid))
    return tuple(result)


class KittiSceneFlowEvaluator(DatasetEvaluator):
    """KITTI 2015 scene flow metrics (`kitti_metrics`): Fl from the output's "flow" /
    "flow_valid", D1 / D2 / SF from the disparities its 3D result implies
    (`estimated_disparities`: Motion R-CNN and SfM-Net; with the input disparities as depth, D1
    measures that input). Ground truth is read at full resolution from the data set's files
    (flow_occ, disp_occ_0, disp_occ_1, obj_map: "all" pixels, KITTI's main figures), the pair
    found by the input's ``image_id``; outputs must be at that size (the models' outputs are at
    the original size). Where the records also name the non-occluded GT (flow_noc, disp_noc_0,
    disp_noc_1: `NOC_KEYS`), the same figures are computed over those pixels too, as the devkit
    does ("noc"). Figures are pooled over the whole set, in percent, with the pixel count;
    `evaluate()` returns ``OrderedDict(kitti=..., kitti_noc=...)`` (``kitti_noc`` only when
    every pair had its noc GT), logs the tables and writes ``output_dir/kitti_metrics.json``
    (atomically).
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._records = None
        self._logger = logging.getLogger(__name__)
        self.reset()

    def reset(self):
        self._counts = {"all": Counter(), "noc": Counter()}
        self._pairs = Counter()  # pairs scored: "all", and "noc" those with their noc GT

    def _record(self, image_id):
        if self._records is None:
            keys = GT_KEYS + tuple(NOC_KEYS.values())
            self._records = {str(d["image_id"]): {k: d[k] for k in keys if k in d}
                             for d in DatasetCatalog.get(self._dataset_name)}
        record = self._records.get(str(image_id))
        missing = [k for k in GT_KEYS if k not in (record or {})]
        if missing:
            raise KeyError(f"KittiSceneFlowEvaluator('{self._dataset_name}'): pair '{image_id}' "
                           f"has no {', '.join(missing)} (KITTI 2015 training ground truth; "
                           "load the data set with load_kitti2015 / register_kitti2015).")
        return record

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "flow" in out:
                record = self._record(inp["image_id"])
                self._counts["all"].update(self.pair_counts(record, out))
                self._pairs["all"] += 1
                if all(key in record for key in NOC_KEYS.values()):
                    noc = {**record, **{occ: record[key] for occ, key in NOC_KEYS.items()}}
                    self._counts["noc"].update(self.pair_counts(noc, out))
                    self._pairs["noc"] += 1

    @staticmethod
    def pair_counts(record, output):
        """`kitti_pair_counts` of one pair from its record's GT files and the model output."""
        obj_map = formats.read_instance_png(record["obj_map_file_name"])
        gt_flow, gt_valid = formats.read_kitti_flow_png(record["flow_file_name"])
        flow = output["flow"].detach().cpu().double().permute(1, 2, 0).numpy()
        if flow.shape[:2] != gt_valid.shape:
            raise ValueError(f"KittiSceneFlowEvaluator: the output is {flow.shape[:2]} (HxW) but "
                             f"'{record['flow_file_name']}' is {gt_valid.shape}: outputs must be "
                             "at the original size.")
        valid = output.get("flow_valid")
        valid = (np.isfinite(flow).all(axis=2) if valid is None
                 else valid.detach().cpu().numpy().astype(bool))
        disparities = estimated_disparities(output, record["disparity_to_depth"])
        if disparities is not None:
            gts = [formats.read_kitti_disparity_png(record[key]) for key in
                   ("disparity_gt_file_name", "disparity_next_gt_file_name")]
            disparities = [(gt, gt > 0, est, est_valid)
                           for gt, (est, est_valid) in zip(gts, disparities)]
        return kitti_pair_counts(obj_map, (gt_flow, gt_valid, flow, valid), disparities)

    def evaluate(self):
        partials = gather_partials((self._counts, self._pairs), self._distributed)
        if partials is None:
            return {}
        counts, pairs = {"all": Counter(), "noc": Counter()}, Counter()
        for partial_counts, partial_pairs in partials:
            for pixels in counts:
                counts[pixels].update(partial_counts[pixels])
            pairs.update(partial_pairs)
        metrics = summarize_kitti_counts(counts["all"])
        if not metrics:
            self._logger.warning(f"[KittiSceneFlowEvaluator] no flow outputs for "
                                 f"'{self._dataset_name}': nothing to score.")
            return OrderedDict(kitti={})
        results = OrderedDict(kitti=metrics)
        if pairs["noc"] == pairs["all"]:  # the noc figures of part of the set would mislead
            results["kitti_noc"] = summarize_kitti_counts(counts["noc"])
        for task, values in results.items():
            self._logger.info("\n" + format_kitti_table(values, self._dataset_name,
                                                        task == "kitti_noc"))
        if self._output_dir:
            write_json_atomically(results, os.path.join(self._output_dir, RESULTS_FILE))
        return results


def format_kitti_table(metrics, dataset_name, noc=False):
    """The log text: one row per metric, bg / fg / all in percent with pixel counts, density;
    `noc`: the figures over the non-occluded GT pixels."""
    def cell(key):
        value = metrics[key]
        return f"{'nan' if math.isnan(value) else f'{value:.2f}'} ({metrics[key + '_count']})"

    rows = [[name] + [cell(f"{name}-{region}") for region in KITTI_REGIONS]
            + [f"{metrics[name + '_density']:.2f}"]
            for name in KITTI_METRICS if f"{name}-all" in metrics]
    table = tabulate(rows, headers=["metric", "bg % (pixels)", "fg % (pixels)", "all % (pixels)",
                                    "density %"], tablefmt="pipe")
    pixels = "non-occluded pixels with GT (noc)" if noc else "pixels with GT"
    return (f"KITTI 2015 scene flow metrics of '{dataset_name}': outliers (error > 3 px and > 5 % "
            f"of the GT) among the {pixels}, pooled over the set; fg = obj_map > 0:\n" + table)
