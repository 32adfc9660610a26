"""`KittiSceneFlowEvaluator`: KITTI 2015's own figures (D1, D2, Fl, SF; bg / fg / all, in
percent) for a data set with KITTI's ground truth, as a Detectron2 `DatasetEvaluator` beside
`MotionEvaluator`. Like the devkit, over all GT pixels ("occ": flow_occ, disp_occ_0, disp_occ_1;
e.g. "D1-all") and over the non-occluded ones ("noc": flow_noc, disp_noc_0, disp_noc_1; the same
names with the suffix "_noc", e.g. "D1-all_noc")."""
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

__all__ = ["KittiSceneFlowEvaluator", "estimated_disparities", "noc_record", "NOC_SUFFIX"]

RESULTS_FILE = "kitti_metrics.json"
GT_KEYS = ("flow_file_name", "obj_map_file_name", "disparity_gt_file_name",
           "disparity_next_gt_file_name", "disparity_to_depth")
# the non-occluded GT (flow_noc, disp_noc_0, disp_noc_1) in place of each "all pixels" GT file
NOC_KEYS = {"flow_file_name": "flow_noc_file_name",
            "disparity_gt_file_name": "disparity_noc_gt_file_name",
            "disparity_next_gt_file_name": "disparity_next_noc_gt_file_name"}
NOC_SUFFIX = "_noc"  # appended to every result name of the noc figures


def estimated_disparities(output, fx_baseline):
    """Disparities (px) implied by a model's 3D result: d_0 = fx b / Z at t and d_1 = fx b /
    (Z + dZ) at t+1, both in frame t's grid (as KITTI's disp_0 / disp_1), with validity (Z finite
    and > 0); None when the output has no "points" / "scene_flow".

    Returns:
        ((d_0 (H, W), valid_0 (H, W)), (d_1, valid_1)) as numpy arrays, 0 where invalid.
    """
    if not _has_3d(output):
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


def output_estimate(output, fx_baseline):
    """What the KITTI figures score of a model output: (flow (H, W, 2) px, its validity (H, W):
    "flow_valid" or the finite pixels, `estimated_disparities` or None), as numpy arrays."""
    flow = output["flow"].detach().cpu().double().permute(1, 2, 0).numpy()
    valid = output.get("flow_valid")
    valid = (np.isfinite(flow).all(axis=2) if valid is None
             else valid.detach().cpu().numpy().astype(bool))
    return flow, valid, estimated_disparities(output, fx_baseline)


def _has_3d(output):
    return "points" in output and "scene_flow" in output


def noc_record(record, output):
    """The record with its non-occluded GT files (`NOC_KEYS`) in place of the "all pixels" ones,
    so that `KittiSceneFlowEvaluator.pair_counts` scores the same estimate over the noc pixels;
    None when the record lacks a noc file the output needs (flow_noc; disp_noc_0 and disp_noc_1
    too for an output with a 3D result, i.e. "points" and "scene_flow")."""
    needed = [occ for occ in NOC_KEYS if occ == "flow_file_name" or _has_3d(output)]
    if not all(NOC_KEYS[occ] in record for occ in needed):
        return None
    return {**record, **{occ: record[NOC_KEYS[occ]] for occ in needed}}


def _at_size(path, array, shape):
    """`array` after checking that its H x W is `shape`, else ValueError naming `path`."""
    if array.shape[:2] != shape:
        raise ValueError(f"KittiSceneFlowEvaluator: '{path}' is {array.shape[:2]} (HxW) but the "
                         f"output is {shape}: outputs and all GT files of a pair must be at the "
                         "original size.")
    return array


class KittiSceneFlowEvaluator(DatasetEvaluator):
    """KITTI 2015 scene flow metrics (`kitti_metrics`): Fl from the output's "flow" /
    "flow_valid", D1 / D2 / SF from the disparities its 3D result implies
    (`estimated_disparities`: Motion R-CNN and SfM-Net; with the input disparities as depth, D1
    measures that input). Ground truth is read at full resolution from the data set's files
    (flow_occ, disp_occ_0, disp_occ_1, obj_map: "all" pixels, KITTI's main figures), the pair
    found by the input's ``image_id``; outputs must be at that size (the models' outputs are at
    the original size). Figures are pooled over the whole set: outliers in percent of the GT
    pixels, the pixel count beside, the density in percent.

    As the devkit does, the same figures are also computed over the non-occluded GT ("noc":
    flow_noc, disp_noc_0, disp_noc_1 named by the records, `NOC_KEYS`): the same estimate, only
    the noc GT pixels count. They are reported under the occ names with the suffix "_noc"
    (`NOC_SUFFIX`: "D1-all_noc", "D1-all_count_noc", "D1_density_noc", ...) when every scored
    pair has the noc files its output needs (`noc_record`); otherwise not at all (figures over
    part of the set would mislead), and the log says why.

    `evaluate()` returns ``OrderedDict(kitti=metrics)``, logs one table each for occ and noc and
    writes ``output_dir/kitti_metrics.json`` (atomically).
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._records = None
        self._logger = logging.getLogger(__name__)
        self.reset()

    def reset(self):
        self._counts = {"occ": Counter(), "noc": Counter()}
        self._pairs = Counter()  # pairs scored: "occ" all, "noc" those with their noc GT

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
            if "flow" not in out:
                continue
            record = self._record(inp["image_id"])
            estimate = output_estimate(out, record["disparity_to_depth"])
            obj_map = formats.read_instance_png(record["obj_map_file_name"])
            for pixels, gt in (("occ", record), ("noc", noc_record(record, out))):
                if gt is not None:  # the output and obj_map converted / read once for both
                    self._counts[pixels].update(self.pair_counts(gt, obj_map, estimate))
                    self._pairs[pixels] += 1

    @staticmethod
    def pair_counts(record, obj_map, estimate):
        """`kitti_pair_counts` of one pair from its record's GT files (flow_file_name,
        disparity_gt_file_name, disparity_next_gt_file_name; `noc_record` puts the noc files
        there), its obj_map (H, W) and the model output's `output_estimate`."""
        flow, valid, disparities = estimate
        shape = flow.shape[:2]
        gt_flow, gt_valid = formats.read_kitti_flow_png(record["flow_file_name"])
        _at_size(record["flow_file_name"], gt_valid, shape)
        _at_size(record["obj_map_file_name"], obj_map, shape)
        if disparities is not None:
            gts = [_at_size(record[key], formats.read_kitti_disparity_png(record[key]), shape)
                   for key in ("disparity_gt_file_name", "disparity_next_gt_file_name")]
            disparities = [(gt, gt > 0, est, est_valid)
                           for gt, (est, est_valid) in zip(gts, disparities)]
        return kitti_pair_counts(obj_map, (gt_flow, gt_valid, flow, valid), disparities)

    def evaluate(self):
        partials = gather_partials((self._counts, self._pairs), self._distributed)
        if partials is None:
            return {}
        counts, pairs = {"occ": Counter(), "noc": Counter()}, Counter()
        for partial_counts, partial_pairs in partials:
            for pixels in counts:
                counts[pixels].update(partial_counts[pixels])
            pairs.update(partial_pairs)
        metrics = summarize_kitti_counts(counts["occ"])
        if not metrics:
            self._logger.warning(f"[KittiSceneFlowEvaluator] no flow outputs for "
                                 f"'{self._dataset_name}': nothing to score.")
            return OrderedDict(kitti={})
        tables = [format_kitti_table(metrics, self._dataset_name)]
        if pairs["noc"] == pairs["occ"]:
            metrics.update(summarize_kitti_counts(counts["noc"], NOC_SUFFIX))
            tables.append(format_kitti_table(metrics, self._dataset_name, NOC_SUFFIX))
        else:
            self._logger.info(
                f"[KittiSceneFlowEvaluator] '{self._dataset_name}': no noc figures, "
                f"{pairs['occ'] - pairs['noc']} of {pairs['occ']} pairs lack the noc GT their "
                f"output needs ({', '.join(NOC_KEYS.values())}; the disp_noc ones only for a 3D "
                "result).")
        for table in tables:
            self._logger.info("\n" + table)
        results = OrderedDict(kitti=metrics)
        if self._output_dir:
            write_json_atomically(results, os.path.join(self._output_dir, RESULTS_FILE))
        return results


def format_kitti_table(metrics, dataset_name, suffix=""):
    """The log text: one row per metric, bg / fg / all in percent with pixel counts, density in
    percent; `suffix` NOC_SUFFIX: the figures over the non-occluded GT pixels."""
    def cell(key):
        value = metrics[key + suffix]
        return (f"{'nan' if math.isnan(value) else f'{value:.2f}'} "
                f"({metrics[key + '_count' + suffix]})")

    rows = [[name] + [cell(f"{name}-{region}") for region in KITTI_REGIONS]
            + [f"{metrics[name + '_density' + suffix]:.2f}"]
            for name in KITTI_METRICS if f"{name}-all{suffix}" in metrics]
    table = tabulate(rows, headers=["metric", "bg % (pixels)", "fg % (pixels)", "all % (pixels)",
                                    "density %"], tablefmt="pipe")
    pixels = ("non-occluded pixels with GT (noc; names end in _noc)" if suffix
              else "pixels with GT (occ)")
    return (f"KITTI 2015 scene flow metrics of '{dataset_name}': outliers (error > 3 px and > 5 % "
            f"of the GT) among the {pixels}, pooled over the set; fg = obj_map > 0:\n" + table)
