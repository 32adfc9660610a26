"""demo.py on your own footage: a video written by OpenCV and a frames folder through every
meta-architecture (random weights), every depth format giving the same result, and the bad
inputs of the README's table each failing with the file named and no result file left."""
import csv
import glob
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg

from motion_rcnn_d2 import MotionPredictor, add_motion_rcnn_config
from motion_rcnn_d2.data import formats
from motion_rcnn_d2.data.datasets import load_vkitti2_sequence
from motion_rcnn_d2.data.formats import DataFormatError
from motion_rcnn_d2.data.synthetic import generate_world

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import demo  # noqa: E402

CONFIGS = {"motion_rcnn": "quick_schedules/motion_rcnn_R18_C6_FPN_instant_test.yaml",
           "flownets": "synthetic/flownets_cpu.yaml", "sfmnet": "synthetic/sfmnet_unsup_cpu.yaml"}
FRAMES, WIDTH, HEIGHT = 4, 128, 48


@pytest.fixture(scope="module")
def world(module_tmp):
    """Frames (PNG, decoded from the world's JPEGs), a lossless video of them, depth PNGs, K."""
    root = module_tmp
    (seq,) = generate_world(str(root / "world"), sequences=1, frames=FRAMES, width=WIDTH,
                            height=HEIGHT, seed=5, progress=False)
    record = load_vkitti2_sequence(seq)[0]
    images = [formats.read_image(p) for p in
              sorted(glob.glob(os.path.join(os.path.dirname(record["file_name"]), "*.jpg")))]
    (root / "frames").mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(root / "frames" / f"frame{i}.png"), image)
    writer = cv2.VideoWriter(str(root / "clip.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 10.0,
                             (WIDTH, HEIGHT))
    for image in images:
        writer.write(image)
    writer.release()
    K = np.asarray(record["intrinsics"])
    return {"root": root, "frames": str(root / "frames"), "video": str(root / "clip.avi"),
            "images": images, "depth": os.path.dirname(record["depth_file_name"]),
            "intrinsics": [str(K[0, 0]), str(K[1, 1]), str(K[0, 2]), str(K[1, 2])]}


@pytest.fixture(scope="module")
def configs(module_tmp):
    """Config files with saved random weights (each run of demo.py loads the same model)."""
    root = module_tmp
    files = {}
    for name, config in CONFIGS.items():
        cfg = get_cfg()
        add_motion_rcnn_config(cfg)
        cfg.merge_from_file(os.path.join(REPO, "configs", config))
        cfg.MODEL.WEIGHTS = ""
        cfg.MODEL.DEVICE = "cpu"
        cfg.INPUT.MIN_SIZE_TEST = HEIGHT  # the frames' size: no resize
        cfg.MODEL.SFMNET.BASE_CHANNELS = 8
        torch.manual_seed(0)
        weights = root / f"{name}.pth"
        torch.save({"model": MotionPredictor(cfg).model.state_dict()}, weights)
        cfg.MODEL.WEIGHTS = str(weights)
        files[name] = str(root / f"{name}.yaml")
        with open(files[name], "w") as f:
            f.write(cfg.dump())
    return files


def _run(config, *args):
    return demo.main(["--config-file", config, "--confidence-threshold", "0.0", *args])


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _video_frames(path):
    capture = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.mark.parametrize("model", list(CONFIGS))
def test_video_and_frames_folder_through_every_model(model, world, configs, tmp_path):
    depth = ["--depth", world["depth"]] if model == "motion_rcnn" else []
    K = ["--intrinsics", *world["intrinsics"]] if model != "flownets" else []
    runs = {}
    for source, option in (("video", "--video-input"), ("frames", "--frames")):
        out = tmp_path / source
        fps = [] if source == "video" else ["--fps", "10"]
        names = _run(configs[model], option, world[source], *depth, *K, *fps, "--output",
                     str(out), "--output-video", str(out / "result.mp4"))
        assert len(names) == FRAMES - 1
        rows = _csv(out / "motions.csv")
        runs[source] = (names, rows, out)
        assert sorted({r["frame"] for r in rows}) == ["0", "1", "2"]
        assert [r["time_s"] for r in rows if r["object"] in ("", "0")] == ["0", "0.1", "0.2"]
        video = _video_frames(str(out / "result.mp4"))
        pictures = 3  # stacked: frame, instances, flow
        assert len(video) == FRAMES - 1 and video[0].shape == (pictures * HEIGHT, WIDTH, 3)
        assert not [p for p in os.listdir(out) if ".tmp" in p]
    # the lossless video decodes to the frames: every number of the two runs is the same
    (video_names, video_rows, video_out), (frame_names, frame_rows, frame_out) = \
        runs["video"], runs["frames"]
    assert video_names == ["clip_000000", "clip_000001", "clip_000002"]
    assert frame_names == ["frame0", "frame1", "frame2"]
    strip = [{k: v for k, v in r.items() if k != "image_id"} for r in video_rows]
    assert strip == [{k: v for k, v in r.items() if k != "image_id"} for r in frame_rows]
    np.testing.assert_array_equal(formats.read_flo(str(video_out / "clip_000001_flow.flo")),
                                  formats.read_flo(str(frame_out / "frame1_flow.flo")))
    # the CSV holds the model's motions of each pair: recompute pair 1 with the predictor
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(configs[model])
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    K_matrix = None
    if K:
        fx, fy, cx, cy = map(float, world["intrinsics"])
        K_matrix = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
    depths = [formats.read_depth_png(p) for p in sorted(glob.glob(world["depth"] + "/*.png"))]
    out = MotionPredictor(cfg)(world["images"][1], world["images"][2],
                               depths[1] if depth else None, K_matrix,
                               depths[2] if depth else None)
    rows = [r for r in frame_rows if r["frame"] == "1"]
    np.testing.assert_allclose(formats.read_flo(str(frame_out / "frame1_flow.flo")),
                               out["flow"].permute(1, 2, 0).numpy(), atol=1e-6)
    if model == "flownets":
        assert len(rows) == 1 and rows[0]["object"] == "" and rows[0]["speed_mps"] == ""
        return
    camera_t = out["camera_motion"]["translation"].double().norm().item()
    for row in rows:
        assert float(row["camera_translation_m"]) == pytest.approx(camera_t, rel=1e-5)
        assert float(row["camera_speed_mps"]) == pytest.approx(10 * camera_t, rel=1e-5)
    translations = (out["instances"].pred_translations if model == "motion_rcnn"
                    else out["motions"]["translations"]).double()
    assert len(rows) == len(translations) > 0
    for row, t in zip(rows, translations):
        assert float(row["translation_m"]) == pytest.approx(t.norm().item(), rel=1e-5, abs=1e-9)
        assert float(row["speed_mps"]) == pytest.approx(10 * t.norm().item(), rel=1e-5, abs=1e-8)


def test_step_halves_the_pairs_and_doubles_the_time(world, configs, tmp_path):
    _run(configs["sfmnet"], "--video-input", world["video"], "--step", "2", "--output",
         str(tmp_path), "--no-pair-files")
    rows = _csv(tmp_path / "motions.csv")
    assert sorted({(r["image_id"], r["frame"], r["time_s"]) for r in rows}) == \
        [("clip_000000", "0", "0")]  # frames 0-2; frame 3 has no partner 2 frames on
    assert os.listdir(tmp_path) == ["motions.csv"]  # --no-pair-files
    for row in rows:  # dt = 2 frames / 10 fps
        assert float(row["speed_mps"]) == pytest.approx(5 * float(row["translation_m"]), rel=1e-5)


def test_motion_rcnn_without_depth_says_which_options_give_it(world, configs, tmp_path):
    with pytest.raises(SystemExit, match="MotionRCNN needs depth for its XYZ input.*--depth "
                                         "FILE_OR_DIR_OR_GLOB.*--sequence or --dataset"):
        _run(configs["motion_rcnn"], "--video-input", world["video"], "--output", str(tmp_path))
    assert os.listdir(tmp_path) == []


def _depth_in(folder, world, kind):
    """The world's depth (PNG centimetres) written in format ``kind``, one file per frame."""
    folder.mkdir()
    for i, path in enumerate(sorted(glob.glob(world["depth"] + "/*.png"))):
        raw = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        metres = formats.read_depth_png(path)  # value / 100, 0 where invalid
        if kind == "png_mm":
            cv2.imwrite(str(folder / f"{i}.png"), (raw.astype(np.int64) * 10).clip(0, 65535)
                        .astype(np.uint16))
        elif kind == "npy":
            metres[metres == 0] = np.nan  # invalid as NaN: masked, the same as 0
            np.save(folder / f"{i}.npy", metres)
        elif kind == "pfm":
            cv2.imwrite(str(folder / f"{i}.pfm"), metres)
    return str(folder)


def test_every_depth_format_gives_the_same_result(world, configs, tmp_path):
    raw = cv2.imread(sorted(glob.glob(world["depth"] + "/*.png"))[0], cv2.IMREAD_UNCHANGED)
    assert raw.max() * 10 < 65535  # the millimetre PNG holds the same depth
    results = {}
    for kind, extra in (("png_cm", []), ("png_mm", ["--depth-scale", "1000"]), ("npy", []),
                        ("pfm", [])):
        depth = world["depth"] if kind == "png_cm" else _depth_in(tmp_path / kind, world, kind)
        out = tmp_path / f"out_{kind}"
        _run(configs["motion_rcnn"], "--frames", world["frames"], "--depth", depth, *extra,
             "--intrinsics", *world["intrinsics"], "--max-pairs", "2", "--output", str(out))
        results[kind] = ((out / "motions.csv").read_bytes(),
                         [(out / f"frame{i}_flow.flo").read_bytes() for i in range(2)])
    assert len(results["png_cm"][0].splitlines()) > 3
    for kind in ("png_mm", "npy", "pfm"):
        assert results[kind] == results["png_cm"], kind
    # and the depth matters: the same PNGs read as half the depth give other motions and flow
    out = tmp_path / "out_half"
    _run(configs["motion_rcnn"], "--frames", world["frames"], "--depth", world["depth"],
         "--depth-scale", "200", "--intrinsics", *world["intrinsics"], "--max-pairs", "2",
         "--output", str(out))
    assert (out / "motions.csv").read_bytes() != results["png_cm"][0]
    assert (out / "frame0_flow.flo").read_bytes() != results["png_cm"][1][0]


def _bad(world, tmp_path, case):
    """demo.py arguments of one bad input (the file the error must name, the expected error)."""
    video, frames = ["--video-input", world["video"]], ["--frames", world["frames"]]
    K = ["--intrinsics", *world["intrinsics"]]
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    depth = [formats.read_depth_png(p) for p in sorted(glob.glob(world["depth"] + "/*.png"))]
    for i, d in enumerate(depth):
        np.save(depth_dir / f"{i}.npy", d)
    if case in ("unreadable_video", "empty_video"):
        path = tmp_path / "clip.mp4"
        path.write_bytes(b"" if case == "empty_video" else b"garbage" * 100)
        return ["--video-input", str(path), "--depth", str(depth_dir), *K], path, DataFormatError
    if case == "non_image_in_folder":
        folder = tmp_path / "frames"
        folder.mkdir()
        for i, image in enumerate(world["images"]):
            cv2.imwrite(str(folder / f"{i}.png"), image)
        (folder / "timestamps.txt").write_text("0.0\n0.1\n")
        return ["--frames", str(folder), "--depth", str(depth_dir), *K], \
            folder / "timestamps.txt", DataFormatError
    if case == "depth_count":
        os.remove(depth_dir / "3.npy")
        return [*video, "--depth", str(depth_dir), *K], "3 depth files", ValueError
    if case == "depth_size":
        np.save(depth_dir / "0.npy", depth[0][:, :-4])
        return [*frames, "--depth", str(depth_dir), *K], depth_dir / "0.npy", ValueError
    if case == "depth_all_invalid":  # found after the first pairs were written
        np.save(depth_dir / "2.npy", np.full_like(depth[2], np.nan))
        return [*video, "--depth", str(depth_dir), *K], depth_dir / "2.npy", DataFormatError
    if case == "missing_calib":
        return [*video, "--depth", str(depth_dir), "--calib", str(tmp_path / "K.txt")], \
            tmp_path / "K.txt", FileNotFoundError
    assert case == "intrinsics_of_another_size"
    return [*video, "--depth", str(depth_dir), "--intrinsics", "725", "725", "620.5", "187"], \
        world["video"], ValueError


BAD_CASES = ["unreadable_video", "empty_video", "non_image_in_folder", "depth_count",
             "depth_size", "depth_all_invalid", "missing_calib", "intrinsics_of_another_size"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_names_the_file_and_leaves_no_result(case, world, configs, tmp_path):
    args, named, error = _bad(world, tmp_path, case)
    out = tmp_path / "out"
    with pytest.raises(error, match=os.path.basename(str(named))):
        _run(configs["motion_rcnn"], *args, "--output", str(out), "--output-video",
             str(out / "result.mp4"))
    left = os.listdir(out) if out.exists() else []
    assert not [p for p in left if p.startswith(("motions.csv", "result.mp4")) or ".tmp" in p]
    if case == "depth_all_invalid":  # pair 0 was complete before frame 2's depth was read
        assert sorted(left) == sorted(f"clip_000000{suffix}" for suffix in (
            "_combined.png", "_flow.flo", "_flow.png", "_flow_kitti.png", "_instances.png",
            "_motions.json", "_points.npy", "_points.ply", "_scene_flow.npy"))


def test_every_case_is_in_the_documentation_table():
    text = open(os.path.join(REPO, "docs", "bad_inputs.md")).read()
    assert not [case for case in BAD_CASES if f"`{case}`" not in text]


@pytest.mark.parametrize("argv,message", [
    (["--dataset", "x", "--depth", "d"], "--depth applies to --input, --video-input and --frames"),
    (["--sequence", "s", "--step", "2"], "--step applies to --video-input and --frames"),
    (["--frames", "f", "--step", "0"], "--step must be > 0, got 0"),
    (["--frames", "f", "--depth-scale", "-100"], "--depth-scale must be > 0"),
    (["--frames", "f", "--intrinsics", "1", "1", "1", "1", "--calib", "K.txt"], "not allowed with"),
])
def test_options_that_do_not_apply_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        demo.parse_args(["--config-file", "c.yaml", "--output", "out", *argv])
    assert message in capsys.readouterr().err
