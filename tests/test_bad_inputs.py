"""Bad inputs, one case each (the rows of docs/bad_inputs.md): every one ends in a clear error
naming the file / key / pair, or in documented handling checked here (invalid depth masked,
empty pairs trained on, tiny images padded)."""
import logging
import os
import pickle
import re
import sys
from argparse import Namespace

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util
from torch import nn

from motion_rcnn_d2.data import MotionDatasetMapper, formats
from motion_rcnn_d2.engine import MotionCheckpointer
from motion_rcnn_inputs import (assert_every_parameter_has_a_gradient, make_input, outputs,
                                tiny_cfg, train_step)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import train_net  # noqa: E402

H, W = 40, 64
PAIR = "bad/clone/00000"
DOC = os.path.join(REPO, "docs", "bad_inputs.md")


def write_pair(root, height=H, width=W, annotations=True):
    """A complete frame-pair dataset dict with its files (JPEG frames, depth/flow PNGs)."""
    rng = np.random.default_rng(0)
    os.makedirs(root, exist_ok=True)
    paths = {k: os.path.join(root, name) for k, name in [
        ("file_name", "rgb_0.jpg"), ("file_name_next", "rgb_1.jpg"),
        ("depth_file_name", "depth_0.png"), ("depth_file_name_next", "depth_1.png"),
        ("flow_file_name", "flow_0.png")]}
    for key in ("file_name", "file_name_next"):
        noise = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        image = cv2.GaussianBlur(noise, (3, 3), 0)
        cv2.imwrite(paths[key], image)
    for key in ("depth_file_name", "depth_file_name_next"):
        formats.write_depth_png(paths[key], np.full((height, width), 20.0))
    flow = np.zeros((height, width, 2), np.float32)
    flow[..., 0] = 1.5
    formats.write_vkitti_flow_png(paths["flow_file_name"], flow, np.ones((height, width), bool))
    record = dict(paths, flow_format="vkitti", height=height, width=width, image_id=PAIR,
                  intrinsics=[[float(width), 0.0, (width - 1) / 2], [0.0, float(width),
                              (height - 1) / 2], [0.0, 0.0, 1.0]],
                  camera_motion={"rotation": np.eye(3).tolist(), "translation": [0.0, 0.0, 0.5],
                                 "moving": True})
    record["annotations"] = []
    if annotations:
        mask = np.zeros((height, width), np.uint8)
        mask[height // 4: height // 2 + 1, width // 4: width // 2 + 1] = 1
        rle = mask_util.encode(np.asfortranarray(mask))
        rle["counts"] = rle["counts"].decode()
        record["annotations"] = [{
            "bbox": [width // 4, height // 4, width // 2 + 1, height // 2 + 1],
            "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0, "track_id": 7,
            "segmentation": rle,
            "motion": {"rotation": np.eye(3).tolist(), "translation": [0.5, 0.0, 0.0],
                       "pivot": [0.0, 1.0, 20.0], "moving": True}}]
    return record


def mapper():
    return MotionDatasetMapper(is_train=False, augmentations=[])


# ------------------------------------------------------------------ files and dataset dicts
def _remove(key):
    def edit(record):
        os.remove(record[key])
        return record[key]
    return edit


def _truncate(key):
    def edit(record):
        data = open(record[key], "rb").read()
        open(record[key], "wb").write(data[: len(data) * 2 // 3])
        return record[key]
    return edit


def _corrupt_png(record):
    path = record["depth_file_name"]
    data = bytearray(open(path, "rb").read())
    start = data.find(b"IDAT") + 8
    data[start: start + 8] = bytes(b ^ 0xFF for b in data[start: start + 8])
    open(path, "wb").write(bytes(data))
    return path


def _corrupt_jpeg(record):
    path = record["file_name_next"]
    data = bytearray(open(path, "rb").read())
    middle = (data.find(b"\xff\xda") + len(data)) // 2
    data[middle: middle + 64] = b"\x00" * 64  # the scan's data damaged, markers intact
    open(path, "wb").write(bytes(data))
    return path


def _empty_file(record):
    open(record["file_name"], "wb").close()
    return record["file_name"]


def _eight_bit_depth(record):
    cv2.imwrite(record["depth_file_name"], np.full((H, W), 20, np.uint8))
    return record["depth_file_name"]


def _resized(key, size):
    def edit(record):
        if key.startswith("depth"):
            formats.write_depth_png(record[key], np.full(size, 20.0))
        else:
            cv2.imwrite(record[key], np.zeros(size + (3,), np.uint8))
        return record[key]
    return edit


def _wrong_dict_size(record):
    record["height"] = H + 10
    return record["file_name"]


def _set_intrinsics(value):
    def edit(record):
        if value is None:
            del record["intrinsics"]
        else:
            record["intrinsics"] = value
        return "'intrinsics'"
    return edit


def _set_motion(key, value, camera=False):
    def edit(record):
        (record["camera_motion"] if camera else record["annotations"][0]["motion"])[key] = value
        return "'camera_motion'" if camera else "track 7"
    return edit


K_SINGULAR = [[0.0, 0.0, 31.5], [0.0, 64.0, 19.5], [0.0, 0.0, 1.0]]
MAPPER_ERRORS = {  # case: (edit of the pair returning what the message must name, error type)
    "missing_frame_t": (_remove("file_name"), FileNotFoundError),
    "missing_frame_next": (_remove("file_name_next"), FileNotFoundError),
    "missing_depth": (_remove("depth_file_name"), FileNotFoundError),
    "missing_depth_next": (_remove("depth_file_name_next"), FileNotFoundError),
    "missing_flow": (_remove("flow_file_name"), FileNotFoundError),
    "truncated_png": (_truncate("depth_file_name"), formats.DataFormatError),
    "corrupt_png": (_corrupt_png, formats.DataFormatError),
    "truncated_jpeg": (_truncate("file_name"), formats.DataFormatError),
    "corrupt_jpeg": (_corrupt_jpeg, formats.DataFormatError),
    "empty_file": (_empty_file, formats.DataFormatError),
    "depth_png_8_bit": (_eight_bit_depth, formats.DataFormatError),
    "frames_of_different_sizes": (_resized("file_name_next", (H, W + 2)), ValueError),
    "depth_of_other_size": (_resized("depth_file_name", (H - 2, W)), ValueError),
    "dict_size_differs_from_files": (_wrong_dict_size, ValueError),
    "zero_intrinsics": (_set_intrinsics(np.zeros((3, 3)).tolist()), ValueError),
    "singular_intrinsics": (_set_intrinsics(K_SINGULAR), ValueError),
    "nan_intrinsics": (_set_intrinsics([[np.nan, 0, 1], [0, 1, 1], [0, 0, 1]]), ValueError),
    "missing_intrinsics": (_set_intrinsics(None), ValueError),
    "rotation_not_orthonormal": (_set_motion("rotation", (2 * np.eye(3)).tolist()), ValueError),
    "rotation_is_a_reflection": (
        _set_motion("rotation", np.diag([-1.0, 1.0, 1.0]).tolist()), ValueError),
    "nan_translation": (_set_motion("translation", [0.0, np.nan, 0.0]), ValueError),
    "camera_rotation_absurd": (
        _set_motion("rotation", [[1, 2, 3], [4, 5, 6], [7, 8, 9]], camera=True), ValueError),
}


@pytest.mark.parametrize("case", sorted(MAPPER_ERRORS))
def test_mapper_errors_name_the_file_or_key_and_pair(tmp_path, case):
    edit, error = MAPPER_ERRORS[case]
    record = write_pair(str(tmp_path))
    mapper()(record)  # the intact pair maps
    named = edit(record)
    with pytest.raises(error) as info:
        mapper()(record)
    message = str(info.value)
    assert named in message and PAIR in message, message


def test_corrupt_jpeg_is_not_decoded_silently(tmp_path):
    """What the check prevents: OpenCV returns a garbled picture for the damaged JPEG."""
    record = write_pair(str(tmp_path))
    intact = cv2.imread(record["file_name_next"])
    path = _corrupt_jpeg(record)
    garbled = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    assert garbled is not None and np.abs(garbled.astype(int) - intact).mean() > 1.0


def test_nan_in_flo_flow_is_invalid_not_used(tmp_path):
    record = write_pair(str(tmp_path))
    flow = np.full((H, W, 2), 2.0, np.float32)
    flow[5:9, 10:20] = np.nan
    record["flow_file_name"] = str(tmp_path / "flow.flo")
    record["flow_format"] = "flo"
    formats.write_flo(record["flow_file_name"], flow)
    out = mapper()(record)
    assert not out["flow_valid"][5:9, 10:20].any() and out["flow_valid"].sum() == H * W - 40
    assert torch.isfinite(out["flow"]).all() and (out["flow"][:, 5:9, 10:20] == 0).all()


@pytest.mark.parametrize("case", ["empty_annotation_list", "pair_without_instances"])
def test_pairs_without_instances_train(tmp_path, case, model):
    record = write_pair(str(tmp_path), annotations=case == "pair_without_instances")
    if case == "pair_without_instances":  # its only object's mask is empty
        empty = mask_util.encode(np.zeros((H, W), np.uint8, order="F"))
        empty["counts"] = empty["counts"].decode()
        record["annotations"][0]["segmentation"] = empty
    out = mapper()(record)
    inst = out["instances"]
    assert len(inst) == 0 and inst.gt_rotations.shape == (0, 3, 3)
    assert inst.gt_masks.tensor.shape == (0, H, W) and inst.gt_boxes.tensor.shape == (0, 4)
    model.zero_grad()
    losses = train_step(model, [out, make_input(48, 64, num_instances=0, seed=3)])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_motion_rot"] == 0 and losses["loss_cam_rot"] > 0
    assert_every_parameter_has_a_gradient(model)  # what DDP needs in such a step


# ------------------------------------------------------------------------------ model input
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(tiny_cfg())


def _bad_depth(x):
    """NaN, +inf, -inf, 0 and negative depth in five blocks; returns their (H, W) mask."""
    bad = torch.zeros(x["depth"].shape[-2:], dtype=torch.bool)
    for i, value in enumerate([float("nan"), float("inf"), -float("inf"), 0.0, -3.0]):
        x["depth"][0, 30:40, 5 + 10 * i: 12 + 10 * i] = value
        bad[30:40, 5 + 10 * i: 12 + 10 * i] = True
    return bad


def test_invalid_depth_is_masked_never_a_point(model):
    x = make_input(48, 64, num_instances=2, training=False)
    bad = _bad_depth(x)
    x["depth_next"] = x["depth"].clone()
    net = model._network_input(x)
    assert torch.isfinite(net).all() and (net[6:12][:, bad] == 0).all()
    out = outputs(model, x)
    assert torch.isfinite(out["flow"]).all()
    assert not out["flow_valid"][bad].any() and (out["flow"][:, bad] == 0).all()
    assert out["flow_valid"][~bad].float().mean() > 0.5


@pytest.mark.parametrize("supervision", ["motion", "flow"])
def test_invalid_depth_trains_with_finite_losses(supervision, model):
    net = model if supervision == "motion" else build_model(tiny_cfg(supervision="flow"))
    x = make_input(48, 64, num_instances=2)
    _bad_depth(x)
    losses = train_step(net, [x])
    assert all(torch.isfinite(v) for v in losses.values())
    assert any(k.startswith("loss_flow") for k in losses) == (supervision == "flow")


@pytest.mark.parametrize("case,value", [("zero_intrinsics", torch.zeros(3, 3)),
                                        ("singular_intrinsics", torch.tensor(K_SINGULAR)),
                                        ("intrinsics_of_wrong_shape", torch.eye(3)[:2])])
def test_model_rejects_bad_intrinsics(model, case, value):
    x = make_input(48, 64, num_instances=1, training=False)
    x["intrinsics"] = value
    with pytest.raises(ValueError, match=r"'synthetic/0'.*'intrinsics' must be a 3x3 pinhole"):
        outputs(model, x)


def test_model_input_without_depth_names_the_key(model):
    x = make_input(48, 64, training=False)
    del x["depth"]
    with pytest.raises(ValueError, match=r"no 'depth'.*XYZ_INPUT"):
        outputs(model, x)


@pytest.mark.parametrize("size", [(1, 1), (20, 30)])  # 1x1 and smaller than the stride 64
def test_tiny_images_are_padded_and_work(size):
    # padded to 32, the camera head's stride-32 map is 1x1: its GroupNorm (32 groups) needs 2+
    # channels per group there, as the shipped configs have (CONV_DIM 128)
    torch.manual_seed(0)
    cfg = tiny_cfg()
    cfg.MODEL.CAMERA_MOTION_HEAD.CONV_DIM = 64
    model = build_model(cfg)
    height, width = size
    x = make_input(height, width, num_instances=0, training=False)
    out = outputs(model, x)
    assert out["flow"].shape == (2, height, width) and torch.isfinite(out["flow"]).all()
    assert out["instances"].image_size == size
    losses = train_step(model, [make_input(height, width, num_instances=int(height > 1))])
    assert all(torch.isfinite(v) for v in losses.values())


def test_one_pixel_pair_through_the_mapper_is_upscaled(tmp_path, model):
    record = write_pair(str(tmp_path), height=1, width=1, annotations=False)
    out = MotionDatasetMapper(is_train=False, augmentations=[T.ResizeShortestEdge(80, 256)])(
        record)
    assert out["image"].shape == (3, 80, 80) and (out["height"], out["width"]) == (1, 1)
    np.testing.assert_allclose(out["intrinsics"][0, 0].item(), 80.0)  # f = 1 px, scaled by 80
    result = outputs(model, out)
    assert result["flow"].shape == (2, 1, 1) and torch.isfinite(result["flow"]).all()


# ------------------------------------------------------------------------- config and weights
def test_unknown_config_key_names_it(tmp_path):
    yaml = tmp_path / "typo.yaml"
    yaml.write_text("_BASE_: {}\nMODEL:\n  MOTION_RCNN:\n    XYZ_SCALEE: 10.0\n".format(
        os.path.join(REPO, "configs", "Base-MotionRCNN-C6-FPN.yaml")))
    with pytest.raises(KeyError, match=r"MODEL\.MOTION_RCNN\.XYZ_SCALEE.*typo\.yaml.*spelling"):
        train_net.load_config(Namespace(config_file=str(yaml), opts=[]))
    base = os.path.join(REPO, "configs", "Base-MotionRCNN-C6-FPN.yaml")
    with pytest.raises(KeyError, match=r"SOLVER\.MAX_ITERS.*command line"):
        train_net.load_config(Namespace(config_file=base, opts=["SOLVER.MAX_ITERS", "5"]))


def test_checkpoint_of_another_architecture_is_an_error(tmp_path, model):
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(8, 2))
    path = str(tmp_path / "other.pth")
    torch.save({"model": other.state_dict()}, path)
    with pytest.raises(ValueError, match=r"other\.pth: 0 of the model's \d+ weights.*'0\.weight'"
                                         r".*another architecture"):
        MotionCheckpointer(model).load(path)


def test_checkpoint_of_another_config_warns_with_counts_and_blocks_resume(tmp_path, caplog,
                                                                          model):
    cfg = tiny_cfg()
    cfg.MODEL.FPN.OUT_CHANNELS = 16  # the tiny model has 32
    MotionCheckpointer(build_model(cfg), str(tmp_path), save_to_disk=True).save("model_0000009")
    path = str(tmp_path / "model_0000009.pth")
    with caplog.at_level(logging.WARNING):
        MotionCheckpointer(model).load(path)
    summary = [r.getMessage() for r in caplog.records if "of the model's" in r.getMessage()]
    assert len(summary) == 1, summary
    match = re.search(r"(\d+) of the model's (\d+) weights loaded.*; (\d+) have other shapes",
                      summary[0])
    loaded, total, shapes = map(int, match.groups())
    assert 0 < loaded < total and shapes > 0 and "fpn" in summary[0]
    with pytest.raises(ValueError, match=r"model_0000009\.pth.*Resuming needs"):
        MotionCheckpointer(model, str(tmp_path)).resume_or_load("", resume=True)


class _RunsCode:
    """Unpickling this runs os.mkdir(path): what a hostile checkpoint could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (self.path,)


@pytest.mark.parametrize("ext", ["pth", "pyth"])
def test_checkpoint_from_a_stranger_runs_no_code(tmp_path, model, ext):
    marker = str(tmp_path / "code_ran")
    path = str(tmp_path / f"hostile.{ext}")
    torch.save({"model": {}, "model_state": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(pickle.UnpicklingError, match=f"hostile.{ext}.*could run code"):
        MotionCheckpointer(model).load(path)
    assert not os.path.exists(marker)
    torch.load(path, weights_only=False)  # the file really is hostile: a plain load runs it
    assert os.path.isdir(marker)


def test_every_case_is_in_the_documentation_table():
    text = open(DOC).read()
    cases = list(MAPPER_ERRORS) + [
        "nan_in_flo_flow", "empty_annotation_list", "pair_without_instances", "invalid_depth",
        "intrinsics_of_wrong_shape", "model_input_without_depth", "image_1x1",
        "image_smaller_than_stride", "unknown_config_key", "checkpoint_of_another_architecture",
        "checkpoint_of_another_config", "hostile_pth", "hostile_pyth", "pkl_checkpoint"]
    missing = [case for case in cases if f"`{case}`" not in text]
    assert not missing, missing
