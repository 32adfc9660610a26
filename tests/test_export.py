"""tools/export_model.py: every artefact it writes, loaded back, matches the eager model.

For each meta-architecture (the quick-schedule Motion R-CNN, FlowNetS, SfM-Net) and each format,
random weights are saved to a checkpoint, exported through the tool's command line at 64x128,
loaded from the written file (torch.export.load, onnxruntime, torch.jit.load), its outputs
rebuilt from the schema in export.json and, for Motion R-CNN, completed by the parts left in
Python; on a pair other than the one exported with, boxes and flow match the eager model to
1e-4. Plus the bad inputs: each a clear error naming the argument, nothing left behind.
"""
import importlib.util
import json
import os
import sys

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from motion_rcnn_d2 import add_motion_rcnn_config
from motion_rcnn_d2.engine.checkpoint import MotionCheckpointer
from motion_rcnn_d2.engine.export import (exported_runner, load_artefact, sample_inputs,
                                          schema_from_json)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))
import export_model  # noqa: E402

CONFIGS = {
    # NMS at 0.2: the two pairs keep different numbers of detections (95 and 87), which the
    # traced model must follow
    "motion_rcnn": ("configs/quick_schedules/motion_rcnn_R18_C6_FPN_instant_test.yaml",
                    ["MODEL.ROI_HEADS.NMS_THRESH_TEST", "0.2"]),
    "flownets": ("configs/synthetic/flownets_cpu.yaml", []),
    "sfmnet": ("configs/synthetic/sfmnet_unsup_cpu.yaml", ["MODEL.SFMNET.BASE_CHANNELS", "8"]),
}
HEIGHT, WIDTH = 64, 128
HAS_ONNX = all(importlib.util.find_spec(m) for m in ("onnxscript", "onnxruntime"))


def _cfg(name, weights=""):
    path, opts = CONFIGS[name]
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(os.path.join(REPO, path))
    cfg.merge_from_list(opts + ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights])
    return cfg


@pytest.fixture(scope="module")
def weights(module_tmp):
    """One random-weight checkpoint per architecture."""
    folder = module_tmp
    paths = {}
    for name in CONFIGS:
        torch.manual_seed(1)
        model = build_model(_cfg(name))
        paths[name] = str(folder / f"{name}.pth")
        torch.save({"model": model.state_dict()}, paths[name])
    return paths


def _export(name, fmt, weights, output):
    path, opts = CONFIGS[name]
    return export_model.main([
        "--config-file", os.path.join(REPO, path), "--format", fmt, "--output", str(output),
        "--input-size", str(HEIGHT), str(WIDTH),
        "--opts", *opts, "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights])


@pytest.mark.parametrize("fmt", ["export", "onnx", "torchscript"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_artefact_matches_the_eager_model(name, fmt, weights, tmp_path):
    if fmt == "onnx" and not HAS_ONNX:
        pytest.skip("onnxscript / onnxruntime not installed (pip install 'motion_rcnn_d2[export]')")
    output = tmp_path / "exported"
    artefact_path = _export(name, fmt, weights[name], output)
    assert sorted(os.listdir(output)) == sorted(["export.json", os.path.basename(artefact_path)])
    assert [p for p in os.listdir(tmp_path) if p != "exported"] == []  # no temporary folder left
    with open(output / "export.json") as f:
        manifest = json.load(f)
    assert manifest["format"] == fmt and manifest["input_size"] == [HEIGHT, WIDTH]
    if name == "motion_rcnn":  # the partial exports say what is left out and why
        reason = "data-dependent" if fmt != "torchscript" else "only known at run time"
        assert reason in manifest["not_exported"]
    else:
        assert manifest["not_exported"] is None

    model = build_model(_cfg(name, weights[name])).eval()
    MotionCheckpointer(model).load(weights[name])
    artefact = load_artefact(artefact_path)
    run = exported_runner(model, fmt, artefact, schema_from_json(manifest["outputs_schema"]))
    inputs = sample_inputs(model, HEIGHT, WIDTH, seed=7)  # not the pair it was exported with
    inputs["image_next"] = torch.roll(inputs["image"], 3, dims=2)  # a pair with a real motion
    with torch.no_grad():
        expected = model([inputs])[0]
        got = run(inputs)
        flat = artefact(*[inputs[k] for k in sorted(inputs)]) if name != "motion_rcnn" else None
    if flat is not None:
        assert len(flat) == len(manifest["outputs"])
    assert got.keys() == expected.keys()
    torch.testing.assert_close(got["flow"], expected["flow"], rtol=0, atol=1e-4)
    if name == "motion_rcnn":
        a, b = got["instances"], expected["instances"]
        assert len(a) == len(b) > 0
        exported_with = model([sample_inputs(model, HEIGHT, WIDTH)])[0]["instances"]
        assert len(exported_with) != len(b)
        torch.testing.assert_close(a.pred_boxes.tensor, b.pred_boxes.tensor, rtol=0, atol=1e-4)
        assert torch.equal(a.pred_classes, b.pred_classes)
        torch.testing.assert_close(got["camera_motion"]["translation"],
                                   expected["camera_motion"]["translation"], rtol=0, atol=1e-5)
        assert torch.equal(got["flow_valid"], expected["flow_valid"])
    if name == "sfmnet":
        torch.testing.assert_close(got["depth"], expected["depth"], rtol=1e-5, atol=1e-4)
        assert torch.equal(got["flow_valid"], expected["flow_valid"])


def test_missing_weights_file_names_the_key(tmp_path):
    output = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match=r"MODEL.WEIGHTS '.*nowhere.pth'.*no such file"):
        _export("flownets", "export", str(tmp_path / "nowhere.pth"), output)
    assert os.listdir(tmp_path) == []


def test_unknown_format_and_missing_config_name_the_argument(tmp_path, capsys):
    with pytest.raises(SystemExit):
        export_model.main(["--config-file", "x.yaml", "--format", "caffe2", "--output",
                           str(tmp_path / "out")])
    assert "argument --format: invalid choice: 'caffe2'" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match=r"--config-file '.*missing.yaml': no such file"):
        export_model.main(["--config-file", str(tmp_path / "missing.yaml"), "--format", "export",
                           "--output", str(tmp_path / "out")])
    assert os.listdir(tmp_path) == []
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match=r"--output '.*a_file' is a file"):
        export_model.main(["--config-file", "x.yaml", "--format", "export", "--output",
                           str(tmp_path / "a_file")])


def test_failure_mid_export_leaves_nothing(weights, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_model, "write_manifest", fail)
    with pytest.raises(OSError, match="disk full"):
        _export("sfmnet", "export", weights["sfmnet"], tmp_path / "out")
    assert os.listdir(tmp_path) == []  # neither the output nor the temporary folder


def test_existing_output_folder_keeps_other_files(weights, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    (output / "model.pt2").write_text("an old export")
    _export("sfmnet", "export", weights["sfmnet"], output)
    assert sorted(os.listdir(output)) == ["export.json", "model.pt2", "notes.txt"]
    assert (output / "notes.txt").read_text() == "mine"
    assert os.path.getsize(output / "model.pt2") > 1000
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("fmt", ["export", "torchscript"])
def test_motion_rcnn_c4_variant(fmt, tmp_path):
    """The C4 RoI heads (MotionRes5ROIHeads) through the same plans, without the tool."""
    from motion_rcnn_inputs import tiny_cfg

    from motion_rcnn_d2.engine.export import ARTEFACTS, plan_export

    cfg = tiny_cfg("c4")
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    model = build_model(cfg).eval()
    plan = plan_export(model, fmt, sample_inputs(model, HEIGHT, WIDTH))
    path = str(tmp_path / ARTEFACTS[fmt])
    export_model.save_artefact(plan, fmt, path)
    run = exported_runner(model, fmt, load_artefact(path), plan.adapter.outputs_schema)
    inputs = sample_inputs(model, HEIGHT, WIDTH, seed=3)
    with torch.no_grad():
        expected, got = model([inputs])[0], run(inputs)
    assert len(got["instances"]) == len(expected["instances"]) > 0
    torch.testing.assert_close(got["instances"].pred_boxes.tensor,
                               expected["instances"].pred_boxes.tensor, rtol=0, atol=1e-4)
    torch.testing.assert_close(got["flow"], expected["flow"], rtol=0, atol=1e-4)
