"""tools/benchmark.py on the tiniest settings: every section present, positive figures, ratios
and shares that are exactly the quotients of the reported values, goals that follow from them;
plus the per-pixel instance index (instance_index_from_masks, made faster for the benchmark's
goal) against a loop that paints the instances in score order. No timing assertions."""
import json
import math
import os
import sys

import pytest
import torch

from motion_rcnn_d2.geometry import instance_index_from_masks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import benchmark  # noqa: E402
import benchmark_report  # noqa: E402

RCNNS = ("mask_rcnn", "mask_rcnn_pad64", "motion_rcnn_6ch", "motion_rcnn_12ch")
MEMORY_MODELS = ("mask_rcnn", "mask_rcnn_chunked", "motion_rcnn_6ch", "motion_rcnn_12ch")
SIZES = ("128x64",)


def painted_index(masks, scores):
    """Reference: paint instances from the worst to the best score (ties: the lower index is
    better), so the best covering instance is painted last."""
    index = torch.full(masks.shape[1:], -1, dtype=torch.int64)
    ranked = sorted(range(masks.shape[0]), key=lambda k: (-float(scores[k]), k))
    for k in reversed(ranked):
        index[masks[k]] = k
    return index


@pytest.mark.parametrize("num", [0, 1, 7, 300])
def test_instance_index_matches_painting_in_score_order(num):
    gen = torch.Generator().manual_seed(num)
    masks = benchmark.box_masks(num, 40, 120, gen)
    masks[:, :5, :7] = True  # a corner every instance covers
    scores = torch.rand(num, generator=gen)
    if num >= 7:
        scores[2] = scores[5]  # a tie: instance 2 must win where both cover a pixel
        masks[2, 20:30, 30:50] = masks[5, 20:30, 30:50] = True
    index = instance_index_from_masks(masks, scores)
    assert index.dtype == torch.int64 and index.shape == (40, 120)
    assert torch.equal(index, painted_index(masks, scores))
    if num >= 7:
        assert int(index[25, 40]) == 2
    if num > 0:
        assert int(index[0, 0]) == int(scores.argmax())
        assert bool((index == -1).any()) == bool((~masks.any(dim=0)).any())


def test_instance_index_chunk_size_does_not_matter():
    gen = torch.Generator().manual_seed(1)
    masks = benchmark.box_masks(20, 30, 60, gen)
    scores = torch.rand(20, generator=gen)
    expected = painted_index(masks, scores)
    for chunk_size in (1, 3, 8, 64):
        assert torch.equal(instance_index_from_masks(masks, scores, chunk_size), expected)


def test_parse_args_defaults_and_errors():
    full, quick = benchmark.parse_args([]), benchmark.parse_args(["--quick"])
    assert full.sizes == [(1242, 375), (512, 160)] and full.detections == 100
    assert quick.sizes == [(256, 80)] and quick.repeats < full.repeats
    assert (full.memory_runs, quick.memory_runs) == (3, 1)
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--memory-runs", "0"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--sizes", "1242by375"])
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--repeats", "0"])


def test_chunked_mask_rcnn_is_stock_mask_rcnn_with_the_chunked_mask_head():
    import benchmark_models
    from detectron2.modeling.roi_heads import StandardROIHeads

    from motion_rcnn_d2.modeling.roi_heads import MotionROIHeads

    stock = benchmark_models.build("mask_rcnn", 18, "cpu")
    chunked = benchmark_models.build("mask_rcnn_chunked", 18, "cpu")
    assert type(stock.roi_heads) is StandardROIHeads
    assert isinstance(chunked.roi_heads, MotionROIHeads) and not chunked.roi_heads.motion_on
    assert chunked.roi_heads.mask_inference_chunk == 16
    assert stock.state_dict().keys() == chunked.state_dict().keys()
    for key, value in stock.state_dict().items():  # the same seed: the same weights
        assert torch.equal(chunked.state_dict()[key], value), key


def test_cuda_code_path_on_the_cpu(tmp_path, monkeypatch):
    """--device cuda's code path, run on the CPU with torch.cuda's clock and memory calls
    faked: every clock read synchronises, the stage times come from extra rounds, and the
    memory peaks are torch.cuda's, reset between inference and training."""
    import benchmark_memory
    import benchmark_models

    calls = {"synchronize": 0, "reset": 0}
    peaks = iter([100 * 2 ** 20, 250 * 2 ** 20])  # inference, then training

    def count(name):
        def fake(*args):
            calls[name] += 1
        return fake

    for module in (benchmark, benchmark_models):
        monkeypatch.setattr(module, "is_cuda", lambda device: True)
    monkeypatch.setattr(torch.cuda, "synchronize", count("synchronize"))
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", count("reset"))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *args: next(peaks))
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # keep the suite's threads
    result = benchmark.main(
        ["--quick", "--sizes", *SIZES, "--depth", "18", "--repeats", "2", "--warmup", "0",
         "--detections", "5", "--world-frames", "2", "--threads", "1", "--skip-memory",
         "--output", str(tmp_path / "result.json")])
    rows = result["inference"][SIZES[0]]
    for name in ("mask_rcnn", "motion_rcnn_12ch"):  # stage times of the 2 extra rounds
        assert rows[name]["stages_ms"]["backbone"] > 0 and rows[name]["detections"] == 5
    # >= 2 reads per timed call, 2 per stage of the extra rounds
    assert calls["synchronize"] > 2 * 2 * len(rows) + 2 * 2 * 2
    assert "memory" not in result and calls["reset"] == 0

    dicts = benchmark.make_world(str(tmp_path / "world"), (128, 64), 2)
    torch.save({SIZES[0]: benchmark.pair_at(dicts[0], (128, 64))}, tmp_path / "inputs.pt")
    spec = {"kind": "motion_rcnn_12ch", "depth": 18, "device": "cpu", "size": SIZES[0],
            "inputs": str(tmp_path / "inputs.pt"), "threads": 1, "detections": 5}
    assert benchmark_memory.measure(spec) == {"inference_mib": 100.0, "training_mib": 250.0,
                                              "peak_reset": True}
    assert calls["reset"] == 1


def test_goals_follow_the_limits():
    result = {"inference": {"1x1": {"motion_rcnn_6ch": {"ratio": 1.05},
                                    "motion_rcnn_12ch": {"ratio": 1.06}}},
              "memory": {"method": "peak", "1x1": {"motion_rcnn_6ch": {"inference_ratio": 1.16},
                                                   "motion_rcnn_12ch": {"inference_ratio": 1.15}}},
              "data": {"ratio": {"2": 0.5}}}
    goals = {g["goal"]: g for g in benchmark_report.evaluate_goals(result)}
    assert len(goals) == 5
    assert goals["inference motion_rcnn_6ch / mask_rcnn at 1x1"]["met"]
    assert not goals["inference motion_rcnn_12ch / mask_rcnn at 1x1"]["met"]
    assert not goals["inference peak memory motion_rcnn_6ch / mask_rcnn at 1x1"]["met"]
    assert goals["inference peak memory motion_rcnn_12ch / mask_rcnn at 1x1"]["met"]
    assert not goals["loader pairs/s (2 workers) / training iterations/s"]["met"]


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module")
def tiny_run(module_tmp):
    out = module_tmp / "result.json"
    threads = torch.get_num_threads()
    try:
        returned = benchmark.main(
            ["--sizes", *SIZES, "--depth", "18", "--repeats", "1", "--warmup", "0",
             "--detections", "5", "--world-frames", "2", "--threads", "1", "--memory-runs", "2",
             "--output", str(out)])
    finally:
        torch.set_num_threads(threads)
    with open(out) as f:
        written = json.load(f)
    return out, returned, written


def test_json_written_atomically_with_every_section(tiny_run):
    out, returned, written = tiny_run
    assert written == json.loads(json.dumps(returned))
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary file left
    for section in ("settings", "inference", "training", "memory", "compose_flow",
                    "object_sweep", "data", "goals"):
        assert section in written, section
    assert written["settings"]["sizes"] == list(SIZES)
    params = written["settings"]["parameters"]
    assert params["motion_rcnn_12ch"]["trainable_m"] > params["mask_rcnn"]["trainable_m"] > 0


def test_inference_and_training_ratios(tiny_run):
    result = tiny_run[2]
    for size in SIZES:
        rows = result["inference"][size]
        assert set(rows) == set(RCNNS) | {"mask_rcnn_chunked", "flownets", "sfmnet"}
        for name, row in rows.items():
            assert row["value"] > 0
            assert _close(row["ratio"], row["value"] / rows["mask_rcnn"]["value"])
        for name in RCNNS + ("mask_rcnn_chunked",):
            assert rows[name]["detections"] == 5  # same RoIs in every model
            # all POST_NMS_TOPK_TEST (1000) at real sizes; a tiny image has ~1000 anchors only
            assert 0 < rows[name]["proposals"] <= 1000
            stages = rows[name]["stages_ms"]
            assert stages["backbone"] > 0 and stages["roi_heads.mask_head"] > 0
            assert (stages["camera_head"] > 0) == name.startswith("motion")
            assert sum(stages.values()) <= rows[name]["value"] * (1 + 1e-9)
        train = result["training"][size]
        assert set(train) == set(RCNNS)
        for name, row in train.items():
            assert row["value"] > 0
            assert _close(row["ratio"], row["value"] / train["mask_rcnn"]["value"])
            assert all(v > 0 for v in row["phases_s"].values())
            assert sum(row["phases_s"].values()) <= row["value"] * (1 + 1e-9)


def test_memory_compose_flow_and_data(tiny_run):
    result = tiny_run[2]
    for size in SIZES:
        rows = result["memory"][size]
        assert set(rows) == set(MEMORY_MODELS)
        for name in MEMORY_MODELS:
            for phase in ("inference", "training"):
                assert rows[name][f"{phase}_mib"] > 0
                runs = rows[name][f"{phase}_runs_mib"]
                assert len(runs) == 2  # --memory-runs
                assert _close(rows[name][f"{phase}_mib"], (runs[0] + runs[1]) / 2)  # median
                assert _close(rows[name][f"{phase}_ratio"],
                              rows[name][f"{phase}_mib"] / rows["mask_rcnn"][f"{phase}_mib"])
    flow = result["compose_flow"]
    assert flow["size"] == SIZES[0]
    assert _close(flow["motion_rcnn_inference_ms"],
                  result["inference"][SIZES[0]]["motion_rcnn_12ch"]["value"])
    assert set(flow["instances"]) == {"10", "100"}
    for row in flow["instances"].values():
        assert min(row["index_ms"], row["indexed_ms"], row["dense_ms"]) > 0
        assert _close(row["inference_path_ms"], row["index_ms"] + row["indexed_ms"])
        assert _close(row["inference_path_share"],
                      row["inference_path_ms"] / flow["motion_rcnn_inference_ms"])
        assert _close(row["dense_share"], row["dense_ms"] / flow["motion_rcnn_inference_ms"])
    sweep = result["object_sweep"]
    assert sweep["size"] == SIZES[0] and set(sweep["detections"]) == {"5", "20"}
    for row in sweep["detections"].values():
        assert row["ms"] > 0
        assert _close(row["share"], row["ms"] / flow["motion_rcnn_inference_ms"])
    data = result["data"]
    assert _close(data["training_s_per_iter"],
                  result["training"][SIZES[0]]["motion_rcnn_12ch"]["value"])
    assert _close(data["training_iters_per_s"], 1.0 / data["training_s_per_iter"])
    assert set(data["pairs_per_s"]) == {"0", "2"}
    for workers, pairs_per_s in data["pairs_per_s"].items():
        assert pairs_per_s > 0
        assert _close(data["ratio"][workers], pairs_per_s / data["training_iters_per_s"])
    assert data["data_wait_ms"] >= 0
    assert _close(data["data_wait_share"],
                  data["data_wait_ms"] / (1000 * data["training_s_per_iter"]))


def test_goals_agree_with_the_sections(tiny_run):
    result = tiny_run[2]
    goals = result["goals"]
    assert len(goals) == 3 * 2 * len(SIZES) + 2
    assert goals == benchmark_report.evaluate_goals(result)
    for goal in goals:
        assert goal["value"] > 0
    memory = [g for g in goals if g["goal"].startswith("inference peak memory")]
    assert [g["value"] for g in memory] == [result["memory"][size][name]["inference_ratio"]
                                           for size in SIZES
                                           for name in ("motion_rcnn_6ch", "motion_rcnn_12ch")]
    flow = goals[-2]
    assert flow["value"] == result["compose_flow"]["instances"]["100"]["inference_path_share"]
    assert flow["met"] == (flow["value"] <= flow["limit"])
    data = goals[-1]
    assert data["value"] == result["data"]["ratio"]["2"]
    assert data["met"] == (data["value"] >= data["limit"])
