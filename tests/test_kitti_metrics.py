"""KITTI 2015 scene flow metrics: the devkit's hole filling against a line-by-line transcription
of its C++ loops, and a hand-made pair whose D1 / D2 / Fl / SF figures are worked out below, over
all GT pixels ("occ", e.g. "D1-all") and over the non-occluded ones ("noc", "D1-all_noc")."""
import json

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.data import formats
from motion_rcnn_d2.evaluation import KittiSceneFlowEvaluator, build_motion_evaluators
from motion_rcnn_d2.evaluation.kitti_metrics import interpolate_background


def devkit_interpolate(values, valid):
    """io_disp.h / io_flow.h interpolateBackground, pixel loop by pixel loop."""
    data, ok = np.array(values, dtype=np.float64), np.array(valid, dtype=bool)
    height, width = ok.shape
    for v in range(height):
        count = 0
        for u in range(width):
            if ok[v, u]:
                if count >= 1:
                    u1, u2 = u - count, u - 1
                    if u1 > 0 and u2 < width - 1:
                        data[v, u1:u2 + 1] = np.minimum(data[v, u1 - 1], data[v, u2 + 1])
                        ok[v, u1:u2 + 1] = True
                count = 0
            else:
                count += 1
        for u in range(width):
            if ok[v, u]:
                data[v, :u], ok[v, :u] = data[v, u], True
                break
        for u in range(width - 1, -1, -1):
            if ok[v, u]:
                data[v, u + 1:], ok[v, u + 1:] = data[v, u], True
                break
    for u in range(width):
        for v in range(height):
            if ok[v, u]:
                data[:v, u], ok[:v, u] = data[v, u], True
                break
        for v in range(height - 1, -1, -1):
            if ok[v, u]:
                data[v + 1:, u], ok[v + 1:, u] = data[v, u], True
                break
    return data, ok


@pytest.mark.parametrize("seed", range(6))
def test_interpolation_equals_the_devkit_loops(seed):
    rng = np.random.default_rng(seed)
    height, width, channels = 7, 11, 1 + seed % 2
    values = rng.normal(size=(height, width, channels)) * 10
    valid = rng.random((height, width)) < [0.2, 0.5, 0.9, 0.05, 0.7, 0.3][seed]
    valid[rng.integers(0, height)] = False  # a row without estimates
    expected = devkit_interpolate(values, valid)
    got = interpolate_background(values, valid)
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])


def test_interpolation_by_hand():
    values = np.array([[-1, 5, -1, -1, 3, -1], [-1] * 6, [-1] * 6, [7, -1, -1, -1, -1, -1],
                       [-1] * 6], dtype=float)[..., None]
    filled, valid = interpolate_background(values, values[..., 0] >= 0)
    np.testing.assert_array_equal(filled[..., 0], [[5, 5, 3, 3, 3, 3], [-1] * 6, [-1] * 6,
                                                   [7] * 6, [7] * 6])
    np.testing.assert_array_equal(valid.all(axis=1), [True, False, False, True, True])


FB = 100.0  # fx * baseline, px m
OBJ = [[0, 0, 0, 1], [0, 0, 0, 1]]
GT_D0 = [[0, 20, 40, 50], [10, 10, 10, 10]]  # 0 = no GT
GT_D1 = [[10, 10, 10, 0], [10, 10, 10, 10]]
EST_D0 = [[5, 24, 41, 60], [10, 13.1, np.nan, 9]]  # nan: no depth
EST_D1 = [[14, 10, 10, 10], [10, 10, np.nan, 20]]
EST_U = [[10, 14, 10, 13.5], [10, 99, 20, 12.9]]  # GT flow (10, 0); est. (1, 1) invalid


# The non-occluded GT ("noc") of the same pair: each map loses some of its GT pixels.
NOC_OCCLUDED = {"flow": [(0, 1), (1, 3)], "d0": [(1, 1)], "d1": [(0, 0)]}


def _write_pair(root, noc=False):
    """The hand-made pair's files; with `noc` also its non-occluded GT (NOC_OCCLUDED removed)."""
    paths = {key: str(root / f"{key}.png") for key in ("obj", "flow", "d0", "d1")}
    cv2.imwrite(paths["obj"], np.array(OBJ, np.uint8))
    flow_valid = np.ones((2, 4), bool)
    flow_valid[0, 0] = False
    gts = {"flow": flow_valid, "d0": np.array(GT_D0, float), "d1": np.array(GT_D1, float)}
    for variant in ("occ", "noc") if noc else ("occ",):
        for key, gt in gts.items():
            gt = gt.copy()
            for pixel in NOC_OCCLUDED[key] if variant == "noc" else ():
                gt[pixel] = 0
            path = paths[key] if variant == "occ" else str(root / f"{key}_noc.png")
            if key == "flow":
                formats.write_kitti_flow_png(path, np.dstack([np.full((2, 4), 10.0),
                                                              np.zeros((2, 4))]), gt)
            else:
                cv2.imwrite(path, (gt * 256).astype(np.uint16))
    record = {"image_id": "000007", "flow_file_name": paths["flow"],
              "obj_map_file_name": paths["obj"],
              "disparity_gt_file_name": paths["d0"], "disparity_next_gt_file_name": paths["d1"],
              "disparity_to_depth": FB}
    if noc:
        record.update(flow_noc_file_name=str(root / "flow_noc.png"),
                      disparity_noc_gt_file_name=str(root / "d0_noc.png"),
                      disparity_next_noc_gt_file_name=str(root / "d1_noc.png"))
    return record


def _output():
    depth, depth_next = FB / np.array(EST_D0), FB / np.array(EST_D1)
    points = np.stack([np.zeros((2, 4)), np.ones((2, 4)), depth])
    points[:, np.isnan(depth)] = np.nan
    scene_flow = np.stack([np.zeros((2, 4)), np.zeros((2, 4)), depth_next - depth])
    flow_valid = np.ones((2, 4), bool)
    flow_valid[1, 1] = False
    return {"flow": torch.tensor(np.stack([EST_U, np.zeros((2, 4))]), dtype=torch.float32),
            "flow_valid": torch.tensor(flow_valid), "points": torch.tensor(points),
            "scene_flow": torch.tensor(scene_flow)}


# Worked out by hand (outlier: error > 3 px and > 5 % of the GT):
# Fl: 7 GT pixels (bg 5, fg 2). Outliers (0,1) |14-10| = 4, (1,2) 10, fg (0,3) 3.5; (1,3) 2.9 is
#     not; (1,1) has no estimate and gets min(left, right) = (10, 0): no outlier (0 would be one).
# D1: 7 GT pixels (bg 5, fg 2). Outliers (0,1) 4 px = 20 %, (1,1) 3.1 px = 31 %, fg (0,3) 10 px;
#     (1,2) has no estimate: min(13.1, 9) = 9, 1 px off (the devkit's -1 would be an outlier).
# D2: 7 GT pixels (bg 6, fg 1 = (1,3)). Outliers (0,0) 14 vs 10, fg (1,3) 20 vs 10.
# SF: pixels with all three GT: 6 (bg 5, fg 1). Outliers (0,1) Fl+D1, (1,1) D1, (1,2) Fl, fg (1,3)
#     D2; (0,2), (1,0) are fine. Density: estimates of d_0 at 5 of them ((1,2) has none).
EXPECTED = {
    "Fl-bg": (40.0, 5), "Fl-fg": (50.0, 2), "Fl-all": (300 / 7, 7), "Fl_density": 600 / 7,
    "D1-bg": (40.0, 5), "D1-fg": (50.0, 2), "D1-all": (300 / 7, 7), "D1_density": 600 / 7,
    "D2-bg": (100 / 6, 6), "D2-fg": (100.0, 1), "D2-all": (200 / 7, 7), "D2_density": 600 / 7,
    "SF-bg": (60.0, 5), "SF-fg": (100.0, 1), "SF-all": (400 / 6, 6), "SF_density": 500 / 6,
}


# Over the noc pixels (the estimates are the same):
# Fl: 5 GT pixels (bg 4, fg 1 = (0,3)); outliers (1,2) and fg (0,3); (1,1) has no estimate.
# D1: 6 GT pixels (bg 4, fg 2); outliers (0,1) and fg (0,3); (1,2) has no estimate.
# D2: 6 GT pixels (bg 5, fg 1); outlier fg (1,3) only ((0,0) is occluded); (1,2) no estimate.
# SF: pixels with all three noc GT: (0,2), (1,0), (1,2), all bg; outlier (1,2) (Fl); d_0
#     estimated at 2 of them.
EXPECTED_NOC = {
    "Fl-bg": (25.0, 4), "Fl-fg": (100.0, 1), "Fl-all": (40.0, 5), "Fl_density": 80.0,
    "D1-bg": (25.0, 4), "D1-fg": (50.0, 2), "D1-all": (100 / 3, 6), "D1_density": 500 / 6,
    "D2-bg": (0.0, 5), "D2-fg": (100.0, 1), "D2-all": (100 / 6, 6), "D2_density": 500 / 6,
    "SF-bg": (100 / 3, 3), "SF-fg": (float("nan"), 0), "SF-all": (100 / 3, 3),
    "SF_density": 200 / 3,
}


def _names(expected, suffix=""):
    """The result names of `expected`'s figures: "<name><suffix>", "<name>_count<suffix>"."""
    return ({k + suffix for k in expected}
            | {k + "_count" + suffix for k, v in expected.items() if isinstance(v, tuple)})


def _assert_figures(metrics, expected, suffix=""):
    for key, value in expected.items():
        if isinstance(value, tuple):
            value, count = value
            assert metrics[key + "_count" + suffix] == count, key + suffix
        assert metrics[key + suffix] == pytest.approx(value, abs=1e-9, nan_ok=True), key + suffix


def _register(name, records):
    DatasetCatalog.register(name, lambda: records)
    MetadataCatalog.get(name).set(thing_classes=["Car", "Van"], kitti_scene_flow=True)


@pytest.fixture
def kitti_set(tmp_path):
    name = "kitti_metrics_hand_case"
    _register(name, [_write_pair(tmp_path)])
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_hand_made_pair(kitti_set, tmp_path):
    evaluator = KittiSceneFlowEvaluator(kitti_set, distributed=False, output_dir=str(tmp_path))
    evaluator.reset()
    evaluator.process([{"image_id": "000007"}], [_output()])
    results = evaluator.evaluate()
    assert list(results) == ["kitti"]
    metrics = results["kitti"]
    assert set(metrics) == _names(EXPECTED)  # no noc GT: no "_noc" figures, not even zeros
    _assert_figures(metrics, EXPECTED)
    written = json.loads((tmp_path / "kitti_metrics.json").read_text())["kitti"]
    assert written["SF-all"] == pytest.approx(400 / 6)
    # pooled over pairs: the same pair twice gives the same percentages, twice the counts
    evaluator.process([{"image_id": "000007"}], [_output()])
    metrics = evaluator.evaluate()["kitti"]
    assert metrics["SF-all"] == pytest.approx(400 / 6) and metrics["SF-all_count"] == 12


def test_hand_made_pair_noc(tmp_path):
    """With the noc GT files the same pair also gets the devkit's noc figures, which count
    only the non-occluded GT pixels; the occ figures are unchanged."""
    name = "kitti_metrics_hand_case_noc"
    occ, noc = tmp_path / "occ", tmp_path / "noc"
    occ.mkdir(), noc.mkdir()
    _register(name, [_write_pair(noc, noc=True),
                     dict(_write_pair(occ), image_id="000008")])  # a pair without noc GT
    try:
        evaluator = KittiSceneFlowEvaluator(name, distributed=False, output_dir=str(tmp_path))
        evaluator.process([{"image_id": "000007"}], [_output()])
        results = evaluator.evaluate()
        assert list(results) == ["kitti"]
        metrics = results["kitti"]
        assert set(metrics) == _names(EXPECTED) | _names(EXPECTED_NOC, "_noc")
        _assert_figures(metrics, EXPECTED)
        _assert_figures(metrics, EXPECTED_NOC, "_noc")
        # the occluded outliers count in occ only: Fl (0,1), D1 (1,1), D2 (0,0)
        assert (metrics["Fl-bg"], metrics["Fl-bg_noc"]) == (40.0, 25.0)
        assert (metrics["D1-bg"], metrics["D1-bg_noc"]) == (40.0, 25.0)
        assert metrics["D2-bg"] == pytest.approx(100 / 6) and metrics["D2-bg_noc"] == 0.0
        written = json.loads((tmp_path / "kitti_metrics.json").read_text())["kitti"]
        assert written["Fl-all_noc"] == pytest.approx(40.0)
        assert written["SF-fg_noc"] is None and written["SF-fg_count_noc"] == 0  # nan: no pixels
        # a pair without its noc GT: noc figures over part of the set are not reported
        evaluator.process([{"image_id": "000008"}], [_output()])
        metrics = evaluator.evaluate()["kitti"]
        assert metrics["Fl-all_count"] == 14
        assert not [key for key in metrics if key.endswith("_noc")]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_noc_needs_the_noc_files_of_what_the_output_has(tmp_path):
    """A pair with flow_noc but without disp_noc_0 / disp_noc_1: a flow-only output (FlowNetS)
    gets its Fl noc figures; an output with a 3D result gets no noc figures at all."""
    name = "kitti_metrics_flow_noc_only"
    record = _write_pair(tmp_path, noc=True)
    del record["disparity_noc_gt_file_name"], record["disparity_next_noc_gt_file_name"]
    _register(name, [record])
    try:
        flow_only = KittiSceneFlowEvaluator(name, distributed=False)
        out = _output()
        flow_only.process([{"image_id": "000007"}], [{"flow": out["flow"],
                                                       "flow_valid": out["flow_valid"]}])
        metrics = flow_only.evaluate()["kitti"]
        fl = {k: v for k, v in EXPECTED.items() if k.startswith("Fl")}
        fl_noc = {k: v for k, v in EXPECTED_NOC.items() if k.startswith("Fl")}
        assert set(metrics) == _names(fl) | _names(fl_noc, "_noc")
        _assert_figures(metrics, fl_noc, "_noc")
        with_3d = KittiSceneFlowEvaluator(name, distributed=False)
        with_3d.process([{"image_id": "000007"}], [out])
        metrics = with_3d.evaluate()["kitti"]
        assert set(metrics) == _names(EXPECTED)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_noc_file_at_the_wrong_size(tmp_path):
    name = "kitti_metrics_noc_wrong_size"
    record = _write_pair(tmp_path, noc=True)
    cv2.imwrite(record["disparity_next_noc_gt_file_name"], np.zeros((3, 4), np.uint16))
    _register(name, [record])
    try:
        evaluator = KittiSceneFlowEvaluator(name, distributed=False)
        with pytest.raises(ValueError, match=r"d1_noc\.png' is \(3, 4\).*original size"):
            evaluator.process([{"image_id": "000007"}], [_output()])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_flow_only_model_and_wrong_size(kitti_set):
    evaluator = KittiSceneFlowEvaluator(kitti_set, distributed=False)
    out = _output()
    evaluator.process([{"image_id": "000007"}], [{"flow": out["flow"], "flow_valid": out[
        "flow_valid"]}])  # FlowNetS: no 3D result, Fl only
    metrics = evaluator.evaluate()["kitti"]
    assert metrics["Fl-all"] == pytest.approx(300 / 7) and "D1-all" not in metrics
    assert "SF-all" not in metrics
    with pytest.raises(ValueError, match=r"flow\.png' is \(2, 4\).*original size"):
        evaluator.process([{"image_id": "000007"}], [{"flow": torch.zeros(2, 3, 4)}])
    with pytest.raises(KeyError, match="pair 'nope' has no flow_file_name"):
        evaluator.process([{"image_id": "nope"}], [out])
    empty = KittiSceneFlowEvaluator(kitti_set, distributed=False)
    assert empty.evaluate() == {"kitti": {}}


def test_built_beside_the_motion_evaluator(kitti_set, tmp_path):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "FlowNetS"
    evaluators = build_motion_evaluators(cfg, kitti_set, str(tmp_path))._evaluators
    assert [type(e).__name__ for e in evaluators] == ["MotionEvaluator", "KittiSceneFlowEvaluator"]


def test_through_the_loader_and_mapper(tmp_path):
    """register_kitti2015 -> MotionDatasetMapper -> a zero-motion output with the input's depth:
    on the loader fixture (GT at (1,1): flow (1.5, -0.25), d_0 = 50, d_1 = 25; flow GT also at
    (2,2) = 0) only D2 and hence SF are outliers (d_1 = d_0 = 50 against 25)."""
    from motion_rcnn_d2 import register_kitti2015
    from motion_rcnn_d2.data.mapper import MotionDatasetMapper
    from test_datasets_kitti2015 import _write_fixture

    root = _write_fixture(str(tmp_path), noc_disparities=True)
    name = "kitti_metrics_loader_case"
    register_kitti2015(name, root)
    try:
        assert MetadataCatalog.get(name).kitti_scene_flow
        evaluator = KittiSceneFlowEvaluator(name, distributed=False)
        evaluator.reset()
        mapper = MotionDatasetMapper(is_train=False, augmentations=[])
        for record in DatasetCatalog.get(name):
            inp = mapper(record)
            depth = inp["depth"][0].double()
            points = torch.stack([torch.zeros_like(depth), torch.zeros_like(depth), depth])
            points[:, depth == 0] = float("nan")
            h, w = depth.shape
            evaluator.process([inp], [{"flow": torch.zeros(2, h, w), "points": points,
                                       "scene_flow": torch.zeros_like(points)}])
        metrics = evaluator.evaluate()["kitti"]
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert (metrics["Fl-all"], metrics["Fl-all_count"], metrics["Fl-bg_count"]) == (0.0, 4, 4)
    assert (metrics["D1-all"], metrics["D1-all_count"]) == (0.0, 2)
    assert (metrics["D2-all"], metrics["D2-all_count"]) == (100.0, 2)
    assert (metrics["SF-bg"], metrics["SF-all_count"]) == (100.0, 2)
    assert metrics["Fl-fg_count"] == 0 and np.isnan(metrics["Fl-fg"])
    assert metrics["D1_density"] == 100.0
    # noc: flow GT at (1,1) only, d_0 GT at (1,1) only in pair 0 (disp_noc_0 of pair 1 is empty)
    assert (metrics["Fl-all_noc"], metrics["Fl-all_count_noc"]) == (0.0, 2)
    assert (metrics["D1-all_noc"], metrics["D1-all_count_noc"]) == (0.0, 1)
    assert (metrics["D2-all_noc"], metrics["D2-all_count_noc"]) == (100.0, 2)
    assert (metrics["SF-all_noc"], metrics["SF-all_count_noc"]) == (100.0, 1)
