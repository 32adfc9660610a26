"""tools/plot_training.py: the series read from a hand-made metrics.json, the PNG, bad input."""
import json
import logging
import math
import os
import sys

import numpy as np
import pytest
from detectron2.data import DatasetCatalog
from PIL import Image

from motion_rcnn_d2.data.synthetic import generate_world

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import plot_training as tool  # noqa: E402
from plot_training import (Series, computed_zero_motion, main,  # noqa: E402
                           parse_zero_motion_arguments, plot_training, read_metrics,
                           read_zero_motion)

DETECTION = ("loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls", "loss_rpn_loc")
OURS = ("loss_motion_rot", "loss_motion_trans", "loss_cam_rot", "loss_cam_trans")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = os.path.join(REPO, "configs/quick_schedules/motion_rcnn_R18_C6_FPN_instant_test.yaml")
SETS = {"synthetic_val": 1, "synthetic_test": 2, "plot_world": 3}
EVALUATED = {"E_R": "motion", "E_t": "motion", "E_R_cam": "motion", "E_t_cam": "motion",
             "AEE": "motion", "AP": "bbox"}


def _losses(iteration):
    """Distinct known values: term k at iteration i is (k + 1) / (i + 1); total their sum."""
    row = {name: (k + 1) / (iteration + 1) for k, name in enumerate(DETECTION + OURS)}
    row["total_loss"] = sum(row.values())
    row.update({"lr": 0.001, "data_time": 0.01, "time": 0.9, "eta_seconds": 30.0,
                "fast_rcnn/cls_accuracy": 0.9, "rpn/num_pos_anchors": 12.0,
                "diag/camera_head.fc/active": 0.5, "diag/grad_norm_total": 3.0})
    return row


def _evaluation(dataset, iteration, prefix=True):
    """Every metric j of data set d at iteration i is 100 d + 10 j + i / 10, plus the keys the
    evaluators log beside them (counts, per class, other AP numbers)."""
    d = SETS[dataset]
    name = f"{dataset}/" if prefix else ""
    row = {}
    for j, (metric, task) in enumerate(EVALUATED.items()):
        row[f"{name}{task}/{metric}"] = 100 * d + 10 * j + iteration / 10
        row[f"{name}{task}/{metric}_count"] = 7
        row[f"{name}{task}/{metric}-Car"] = -1.0
    row.update({f"{name}bbox/AP50": -1.0, f"{name}segm/AP": -1.0, f"{name}motion/E_p": -1.0,
                f"{name}motion/O_pr": math.nan})
    return row


def _value(dataset, metric, iteration):
    return 100 * SETS[dataset] + \
        10 * list(EVALUATED).index(metric) + iteration / 10


def _write_lines(path, rows, end="\n"):
    path.write_text("\n".join(json.dumps(r, sort_keys=True) for r in rows) + end)
    return path


def _run(tmp_path):
    """A run with TEST.EVAL_PERIOD 20 of 40 iterations on two test sets, written as Detectron2's
    JSONWriter writes it: losses every 10 iterations; the evaluation at iteration 19 in the same
    line as that period's losses; the final one (after training) in a line of its own; NaN for
    synthetic_test's E_R at iteration 19 (nothing matched)."""
    eval19 = {**_evaluation("synthetic_val", 19), **_evaluation("synthetic_test", 19)}
    eval19["synthetic_test/motion/E_R"] = math.nan
    rows = [_losses(9), {**_losses(19), **eval19}, _losses(29), _losses(39),
            {"iteration": 40, **_evaluation("synthetic_val", 40),
             **_evaluation("synthetic_test", 40)}]
    for row, iteration in zip(rows[:4], (9, 19, 29, 39)):
        row["iteration"] = iteration
    return _write_lines(tmp_path / "metrics.json", rows)


def _zero_motion(folder, scale=1.0, **override):
    motion = {"E_R": 0.3 * scale, "E_t": 0.4 * scale, "E_p": 22.0, "O_pr": None, "O_rc": 0.0,
              "E_R_cam": 0.25 * scale, "E_t_cam": 0.85 * scale, "AEE": 6.5 * scale,
              "E_t_count": 236, **override}
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "motion_metrics.json")
    with open(path, "w") as f:
        json.dump({"motion": motion}, f)
    return path


def test_series_are_read_exactly_per_key_and_data_set(tmp_path):
    curves = read_metrics(str(_run(tmp_path)))
    assert sorted(curves.losses) == sorted(DETECTION + OURS + ("total_loss",))
    for k, name in enumerate(DETECTION + OURS):
        assert curves.losses[name] == Series([9, 19, 29, 39], [(k + 1) / (i + 1)
                                                              for i in (9, 19, 29, 39)])
    assert curves.losses["total_loss"].values == [45 / (i + 1) for i in (9, 19, 29, 39)]
    assert sorted(curves.metrics) == sorted(EVALUATED)
    for metric in EVALUATED:
        assert sorted(curves.metrics[metric]) == ["synthetic_test", "synthetic_val"]
        for dataset, series in curves.metrics[metric].items():
            assert series.iterations == [19, 40]
            if (dataset, metric) == ("synthetic_test", "E_R"):
                assert math.isnan(series.values[0])
                assert series.values[1] == _value(dataset, metric, 40)
            else:
                assert series.values == [_value(dataset, metric, i) for i in (19, 40)]


def test_one_test_set_logs_without_its_name_and_a_resumed_run_keeps_the_last_values(tmp_path):
    rows = [{"iteration": 9, "loss_cls": 1.0, "total_loss": 1.0},
            {"iteration": 19, "loss_cls": 0.5, "total_loss": 0.5,
             **_evaluation("synthetic_val", 19, False)},
            {"iteration": 29, "loss_cls": 0.25, "total_loss": 0.25},
            # resumed from the checkpoint of iteration 19: 29 is logged again
            {"iteration": 29, "loss_cls": 0.125, "total_loss": 0.125},
            {"iteration": 39, "loss_cls": 0.0, "total_loss": 0.1,
             **_evaluation("synthetic_val", 39, False)}]
    curves = read_metrics(str(_write_lines(tmp_path / "metrics.json", rows)), "synthetic_val")
    assert curves.losses["loss_cls"] == Series([9, 19, 29, 39], [1.0, 0.5, 0.125, 0.0])
    assert curves.metrics["E_t_cam"] == {
        "synthetic_val": Series([19, 39], [_value("synthetic_val", "E_t_cam", i) for i in (19, 39)])}


def test_zero_motion_levels_are_read_from_the_file_or_its_folder(tmp_path):
    path = _zero_motion(tmp_path / "zero")
    levels = read_zero_motion(path)
    assert levels == {"E_R": 0.3, "E_t": 0.4, "E_R_cam": 0.25, "E_t_cam": 0.85, "AEE": 6.5}
    assert read_zero_motion(str(tmp_path / "zero")) == levels
    assert math.isnan(read_zero_motion(_zero_motion(tmp_path / "null", E_R=None))["E_R"])
    assert parse_zero_motion_arguments([f"synthetic_val={path}"]) == {"synthetic_val": levels}


def test_png_of_every_panel_with_zero_levels(tmp_path):
    zero = {"synthetic_val": read_zero_motion(_zero_motion(tmp_path / "val")),
            "synthetic_test": read_zero_motion(_zero_motion(tmp_path / "test", scale=1.1))}
    out = tmp_path / "plots" / "curves.png"
    panels = plot_training(read_metrics(str(_run(tmp_path))), str(out), zero)
    assert panels == ["loss", "E_R", "E_t", "E_R_cam", "E_t_cam", "AEE", "AP"]
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1200, 3 * 320)
        image.verify()
    assert os.listdir(out.parent) == ["curves.png"]  # no temporary file left


def test_command_line_names_the_one_test_set_from_the_runs_config(tmp_path):
    rows = [{"iteration": 19, "loss_cls": 0.5, "total_loss": 0.5,
             **_evaluation("synthetic_val", 19, False)}]
    _write_lines(tmp_path / "metrics.json", rows)
    (tmp_path / "config.yaml").write_text("DATASETS:\n  TEST:\n  - synthetic_val\n  TRAIN:\n  - x\n")
    zero = os.path.dirname(_zero_motion(tmp_path / "zero"))
    output = main([str(tmp_path), "--zero-motion", f"synthetic_val={zero}"])
    assert output == str(tmp_path / "training_curves.png")
    with Image.open(output) as image:
        assert image.size == (1200, 3 * 320)
    # without config.yaml the set is "test", and --dataset-name names it
    os.remove(tmp_path / "config.yaml")
    with pytest.raises(ValueError, match=r"--zero-motion synthetic_val: .* \(it has: test\)"):
        main([str(tmp_path), "--zero-motion", f"synthetic_val={zero}"])
    main([str(tmp_path / "metrics.json"), "--dataset-name", "synthetic_val",
          "--zero-motion", f"synthetic_val={zero}", "--output", str(tmp_path / "b.png")])
    assert (tmp_path / "b.png").is_file()


def test_a_metric_never_logged_loses_its_panel_with_a_warning(tmp_path, caplog):
    rows = [{"iteration": i, "loss_cls": 1.0, "loss_cam_trans": 2.0, "total_loss": 3.0}
            for i in (9, 19)]
    rows[1].update({"synthetic_val/motion/AEE": 2.0})
    curves = read_metrics(str(_write_lines(tmp_path / "metrics.json", rows)))
    with caplog.at_level(logging.WARNING, logger="plot_training"):
        panels = plot_training(curves, str(tmp_path / "out.png"))
    assert panels == ["loss", "AEE"]
    skipped = [r.getMessage() for r in caplog.records]
    assert len(skipped) == 5 and "'motion/E_t_cam'" in skipped[3] and "'bbox/AP'" in skipped[4]
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (1200, 2 * 320)
    # losses only (no TEST.EVAL_PERIOD): one row
    del rows[1]["synthetic_val/motion/AEE"]
    curves = read_metrics(str(_write_lines(tmp_path / "metrics.json", rows)))
    assert plot_training(curves, str(tmp_path / "out.png")) == ["loss"]
    with Image.open(tmp_path / "out.png") as image:
        assert image.size == (1200, 320)


def test_an_incomplete_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    path = _run(tmp_path)
    text = path.read_text()
    path.write_text(text + '{"iteration": 49, "loss_cls": 0.')
    with caplog.at_level(logging.WARNING, logger="plot_training"):
        curves = read_metrics(str(path))
    assert "line 6: incomplete last line skipped" in caplog.text
    assert repr(curves) == repr(read_metrics(str(_write_lines(tmp_path / "again.json", [
        json.loads(line) for line in text.splitlines()]))))


@pytest.mark.parametrize("content, message", [
    ('{"iteration": 9, "loss_cls": 1.0}\n{"iteration": 19, "loss_cls"\n{"iteration": 29}\n',
     r"metrics.json, line 2: not JSON"),
    ('{"iteration": 9, "loss_cls": 1.0}\n{"loss_cls": 1.0}\n', r"line 2: expected a JSON object "
     r"with an integer 'iteration'"),
    ('[1, 2]\n', r"line 1: expected a JSON object"),
    ('{"iteration": 9.5, "loss_cls": 1.0}\n', r"line 1: expected a JSON object"),
    ('{"iteration": 9, "loss_cls": "1.0"}\n', r"line 1: 'loss_cls' is '1.0', not a number"),
    ('{"iteration": 9, "val/motion/E_t": null}\n', r"line 1: 'val/motion/E_t' is None"),
    ('{"iteration": 9, "lr": 0.1, "fast_rcnn/cls_accuracy": 0.5}\n',
     r"metrics.json: neither loss terms .* nor evaluation results"),
])
def test_malformed_metrics_files_raise_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "metrics.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        plot_training(read_metrics(str(path)), str(tmp_path / "out.png"), source=str(path))
    assert not (tmp_path / "out.png").exists()


def test_bad_arguments_raise_naming_the_file_or_data_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: no such file. Give the metrics.json"):
        main([str(tmp_path / "nowhere")])
    os.makedirs(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="nowhere/metrics.json: no such file"):
        main([str(tmp_path / "nowhere")])
    run = str(_run(tmp_path))
    with pytest.raises(FileNotFoundError, match="--zero-motion: .*absent: no such file. Write it with"):
        main([run, "--zero-motion", f"synthetic_val={tmp_path / 'absent'}"])
    with pytest.raises(ValueError, match="--zero-motion 'synthetic_val': expected NAME=PATH"):
        main([run, "--zero-motion", "synthetic_val"])
    zero = _zero_motion(tmp_path / "zero")
    with pytest.raises(ValueError, match=r"--zero-motion synthetic_vall: .* has no evaluation "
                       r"results .* \(it has: synthetic_test, synthetic_val\)"):
        main([run, "--zero-motion", f"synthetic_vall={zero}"])
    bad = tmp_path / "bad.json"
    for content in ('{"bbox": {}}', "[]", "{not json"):
        bad.write_text(content)
        with pytest.raises(ValueError, match="bad.json is not a JSON object with a 'motion'"):
            read_zero_motion(str(bad))
    bad.write_text('{"motion": {"E_R": 0.3}}')
    with pytest.raises(ValueError, match="bad.json: 'motion' has no key 'E_t'"):
        read_zero_motion(str(bad))
    bad.write_text(json.dumps({"motion": {**json.load(open(zero))["motion"], "AEE": "6"}}))
    with pytest.raises(ValueError, match="bad.json: 'motion' key 'AEE' is '6', not a number"):
        read_zero_motion(str(bad))
    assert not os.path.exists(os.path.join(os.path.dirname(run), tool.DEFAULT_OUTPUT))


def test_zero_motion_levels_computed_for_a_registered_world(tmp_path):
    """--zero-motion-datasets computes the levels with tools/zero_motion_baseline.py's function:
    the camera's are the mean GT camera rotation angle and translation norm of the world's pairs
    (identity camera predicted), computed here from the dataset dicts."""
    root = str(tmp_path / "world")
    generate_world(root, sequences=1, frames=3, width=128, height=48, seed=0, progress=False)
    rows = [{"iteration": 19, "loss_cls": 0.5, "total_loss": 0.5,
             **_evaluation("plot_world", 19)}]
    _write_lines(tmp_path / "metrics.json", rows)
    with pytest.raises(ValueError, match=r"--zero-motion other: .* \(it has: plot_world\)"):
        main([str(tmp_path), "--zero-motion-datasets", "other", "--config-file", QUICK])
    with pytest.raises(FileNotFoundError, match="config.yaml'; give the run's config"):
        main([str(tmp_path), "--zero-motion-datasets", "plot_world",
              "--register", f"plot_world={root}"])
    output = main([str(tmp_path), "--zero-motion-datasets", "plot_world", "--config-file", QUICK,
                   "--register", f"plot_world={root}"])
    with Image.open(output) as image:
        assert image.size == (1200, 3 * 320)

    levels = computed_zero_motion(["plot_world"], QUICK)["plot_world"]
    dicts = DatasetCatalog.get("plot_world")
    assert len(dicts) == 2
    translations = [np.linalg.norm(d["camera_motion"]["translation"]) for d in dicts]
    # the model input holds float32 rotations; near 0 deg arccos magnifies their rounding
    traces = [np.trace(np.float32(d["camera_motion"]["rotation"]).astype(np.float64)) for d in dicts]
    angles = [np.degrees(np.arccos(np.clip((t - 1) / 2, -1, 1))) for t in traces]
    assert levels["E_t_cam"] == pytest.approx(np.mean(translations), rel=1e-6)
    assert levels["E_R_cam"] == pytest.approx(np.mean(angles), rel=1e-6)
    assert sorted(levels) == ["AEE", "E_R", "E_R_cam", "E_t", "E_t_cam"]
    assert levels["AEE"] > 0 and levels["E_t"] > 0
