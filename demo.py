#!/usr/bin/env python
"""Run a trained model on frame pairs and write pictures, flow files and motions.

    # every consecutive pair of a video or a folder / glob of frames (sorted by name)
    python demo.py --config-file CFG --video-input clip.mp4 --output out/ \
        [--output-video out/result.mp4] [--depth DIR_OR_GLOB --calib K.txt] --opts MODEL.WEIGHTS m.pth
    python demo.py --config-file CFG --frames 'frames/*.png' --depth depth/ \
        --intrinsics FX FY CX CY --fps 10 --output out/
    # two frames (+ depth of frame t)
    python demo.py --config-file CFG --input t.png t1.png --depth depth.png --output out/
    # every pair of a Virtual KITTI 2 layout sequence folder (SceneNN/<variant>)
    python demo.py --config-file CFG --sequence datasets/vkitti2/Scene01/clone --output out/
    # pairs of a registered data set (e.g. the synthetic world's validation split)
    python demo.py --config-file CFG --dataset synthetic_val --max-pairs 8 --output out/

Depth (``--depth``, one file per frame, matched by order) is needed by Motion R-CNN only:
16-bit PNG (``--depth-scale`` units per metre, default 100 = Virtual KITTI's centimetres),
``.npy`` or ``.pfm`` in metres. K: ``--intrinsics`` or ``--calib`` (a 3x3 text matrix or KITTI's
calib_cam_to_cam.txt); without them Virtual KITTI's field of view is assumed (a warning says so).

Per pair, named after its image id: ``*_instances.png`` (Detectron2's Visualizer with each
object's speed in m per frame, rotation in degrees, moving or still, and the camera motion),
``*_flow.png`` (torchvision's flow_to_image), ``*_flow_error.png`` (KITTI's error colouring,
when there is GT flow), ``*_flow.flo`` and ``*_flow_kitti.png`` (the predicted flow),
``*_motions.json`` (all motions), ``*_combined.png`` (frame, instances, predicted flow,
GT flow, error, stacked) and, for Motion R-CNN and SfM-Net, the 3D result: ``*_points.npy``,
``*_scene_flow.npy`` (H x W x 3 metres, camera t, NaN where depth is invalid) and
``*_points.ply`` (coloured point cloud; motion_rcnn_d2/utils/scene_flow_files.py);
``--no-pair-files`` skips them. For all pairs: ``motions.csv`` (one row per pair and object,
motion_rcnn_d2/utils/outputs.py) and with ``--output-video`` the combined pictures as a video.
Both are renamed into place only when complete.
"""
import argparse
import json
import os
import time
from contextlib import ExitStack

# see train_net.py: passive OpenMP waiting avoids a ~10x slow-down on busy CPUs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tqdm  # noqa: E402

import motion_rcnn_d2  # noqa: E402,F401  (first: adapts Detectron2, registers components)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import DatasetCatalog, MetadataCatalog  # noqa: E402
from detectron2.structures import Instances  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from motion_rcnn_d2 import MotionDatasetMapper, MotionPredictor, add_motion_rcnn_config  # noqa: E402
from motion_rcnn_d2.data import formats, prepare_datasets  # noqa: E402
from motion_rcnn_d2.data.calibration import (  # noqa: E402
    assumed_intrinsics,
    check_principal_point,
    intrinsics_matrix,
    read_calib,
)
from motion_rcnn_d2.data.datasets import load_vkitti2_sequence  # noqa: E402
from motion_rcnn_d2.data.sources import DepthFiles, FrameFiles, FramePairs, VideoFrames  # noqa: E402
from motion_rcnn_d2.geometry import flow_metrics  # noqa: E402
from motion_rcnn_d2.utils.outputs import MotionsCSV, VideoOutput  # noqa: E402
from motion_rcnn_d2.utils.files import write_atomically as _write_atomic  # noqa: E402
from motion_rcnn_d2.utils.scene_flow_files import write_scene_flow  # noqa: E402
from motion_rcnn_d2.utils.visualizer import (  # noqa: E402
    draw_motions,
    flow_error_picture,
    flow_pictures,
)

FRAME_SOURCES = ("input", "video_input", "frames")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs=2, metavar=("FRAME_T", "FRAME_T1"))
    src.add_argument("--video-input", metavar="FILE", help="a video (anything OpenCV reads)")
    src.add_argument("--frames", metavar="DIR_OR_GLOB", help="frames (PNG/JPEG), sorted by name")
    src.add_argument("--sequence", metavar="DIR", help="a SceneNN/<variant> folder")
    src.add_argument("--dataset", metavar="NAME", help="a registered data set")
    p.add_argument("--depth", metavar="FILE_OR_DIR_OR_GLOB",
                   help="depth, one file per frame in the frames' order: 16-bit PNG, .npy or "
                        ".pfm (metres); needed by Motion R-CNN")
    p.add_argument("--depth-scale", type=float, default=100.0, metavar="UNITS",
                   help="16-bit depth PNG units per metre (default 100: centimetres)")
    camera = p.add_mutually_exclusive_group()
    camera.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                        help="K of the frames in pixels (default: Virtual KITTI's field of view)")
    camera.add_argument("--calib", metavar="FILE", help="K of the frames: a 3x3 text matrix")
    p.add_argument("--step", type=int, default=1, metavar="K", help="use every K-th frame")
    p.add_argument("--max-pairs", type=int, default=None, help="stop after this many pairs")
    p.add_argument("--fps", type=float, default=None,
                   help="frames per second, for speeds in m/s (default: the video's)")
    p.add_argument("--confidence-threshold", type=float, default=None,
                   help="minimum detection score (default: the config's)")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--output-video", metavar="FILE",
                   help="also write the combined pictures as a video (.mp4, .avi, .mkv)")
    p.add_argument("--no-pair-files", action="store_true",
                   help="write only motions.csv (and the video), no per-pair files")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs")
    args = p.parse_args(argv)
    if not any(getattr(args, source) for source in FRAME_SOURCES):
        for option in ("depth", "intrinsics", "calib"):
            if getattr(args, option) is not None:
                p.error(f"--{option} applies to --input, --video-input and --frames; "
                        "--sequence and --dataset bring their own")
        if args.step != 1:
            p.error("--step applies to --video-input and --frames")
    for option in ("step", "max_pairs", "fps", "depth_scale"):
        value = getattr(args, option)
        if value is not None and not value > 0:
            p.error(f"--{option.replace('_', '-')} must be > 0, got {value}")
    return args


def setup_cfg(args):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.confidence_threshold is not None:
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = args.confidence_threshold
    cfg.freeze()
    return cfg


def pair_records(args, cfg):
    """Dataset dicts (one per pair) from --sequence or --dataset."""
    if args.sequence:
        classes = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes", ("Car", "Van")) \
            if cfg.DATASETS.TEST else ("Car", "Van")
        return load_vkitti2_sequence(os.path.normpath(args.sequence), tuple(classes),
                                     dataset_name=args.sequence)
    if args.dataset not in DatasetCatalog.list():
        raise SystemExit(f"--dataset {args.dataset!r} is not registered; registered: "
                         f"{', '.join(sorted(DatasetCatalog.list()))}")
    return DatasetCatalog.get(args.dataset)


def record_pairs(args, cfg):
    """Pairs of --sequence or --dataset (with GT flow where they have it), their number."""
    records = pair_records(args, cfg)[: args.max_pairs]
    reader = MotionDatasetMapper(is_train=False, augmentations=[], image_format="BGR")

    def pairs():
        for index, record in enumerate(records):
            image, dense = reader.read_pair(record)
            yield {"image_id": str(record.get("image_id", index)), "frame": index,
                   "image": image, "image_next": dense["image_next"], "depth": dense["depth"],
                   "depth_next": dense.get("depth_next"),
                   "intrinsics": np.asarray(record["intrinsics"], np.float64),
                   "gt": (dense["flow"], dense["flow_valid"]) if "flow" in dense else None}

    return pairs(), len(records)


def frame_pairs(args, cfg, needs, logger):
    """FramePairs of --input, --video-input or --frames with --depth and K; checks every input
    it can before the first pair. ``needs``: MotionPredictor.required_inputs()."""
    if needs["depth"] and not args.depth:
        raise SystemExit(
            f"{cfg.MODEL.META_ARCHITECTURE} needs depth for {needs['depth']}: give --depth "
            "FILE_OR_DIR_OR_GLOB (one file per frame: 16-bit PNG with --depth-scale, or .npy / "
            ".pfm in metres), or run it on --sequence or --dataset, which bring their depth. "
            "FlowNetS and SfM-Net run on the frames alone.")
    if args.video_input:
        frames = VideoFrames(args.video_input)
    else:
        frames = FrameFiles(args.frames) if args.frames else FrameFiles(paths=args.input)
    depth = DepthFiles(args.depth, args.depth_scale) if args.depth else None
    K = (read_calib(args.calib) if args.calib
         else intrinsics_matrix(*args.intrinsics) if args.intrinsics else None)
    if K is None and needs["intrinsics"]:
        K = assumed_intrinsics(frames.width, frames.height)
        logger.warning(
            f"No --intrinsics or --calib: assuming fx = fy = {K[0, 0]:.1f}, cx = {K[0, 2]:.1f}, "
            f"cy = {K[1, 2]:.1f} for the {frames.width}x{frames.height} frames (Virtual KITTI's "
            "field of view); motions in metres are only as right as this K.")
    if K is not None:
        check_principal_point(K, frames.width, frames.height, f"'{frames.name}'")
    return FramePairs(frames, depth, K, args.step, args.max_pairs), frames.fps


def motions_json(output):
    """The output's motions as plain lists (rotation 3x3, translation m, pivot m)."""
    result = {}
    if "instances" in output:
        inst = output["instances"].to("cpu")
        fields = inst.get_fields()
        result["instances"] = [
            {
                "box": fields["pred_boxes"].tensor[i].tolist(),
                "score": float(fields["scores"][i]),
                "class": int(fields["pred_classes"][i]),
                **{key: fields[f"pred_{key}"][i].tolist()
                   for key in ("rotations", "translations", "pivots", "moving_scores")
                   if f"pred_{key}" in fields},
            }
            for i in range(len(inst))
        ]
    if "camera_motion" in output:
        result["camera_motion"] = {k: torch.as_tensor(v).cpu().tolist()
                                   for k, v in output["camera_motion"].items()}
    if "motions" in output:
        result["motions"] = {k: torch.as_tensor(v).cpu().tolist()
                             for k, v in output["motions"].items()}
    return result


def _dump_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def write_pair(out_dir, name, image_bgr, output, gt, metadata, save_files=True):
    """Write every file of one pair (unless not ``save_files``); returns the pair's flow
    metrics (or None) and the combined picture (RGB: frame, instances, flow[, GT, error])."""
    rgb = image_bgr[:, :, ::-1]
    inst = output["instances"].to("cpu") if "instances" in output else Instances(rgb.shape[:2])
    camera = output.get("camera_motion")
    instances_pic = draw_motions(rgb, inst, metadata, camera)
    rows, metrics = [rgb, instances_pic], None
    path = os.path.join(out_dir, name)
    save = _write_atomic if save_files else (lambda path, write: None)
    if "flow" in output:
        flow = output["flow"].detach().cpu().float()
        flow_hw2 = flow.permute(1, 2, 0).numpy()
        if gt is not None:
            gt_flow, gt_valid = torch.as_tensor(gt[0]).permute(2, 0, 1), torch.as_tensor(gt[1])
            pred_pic, gt_pic = flow_pictures([flow, gt_flow], [None, gt_valid])
            error_pic = flow_error_picture(flow, gt_flow, gt_valid)
            save(path + "_flow_error.png", lambda p: cv2.imwrite(p, error_pic[:, :, ::-1]))
            rows += [pred_pic, gt_pic, error_pic]
            metrics = flow_metrics(flow[None], gt_flow[None], gt_valid[None])
        else:
            (pred_pic,) = flow_pictures([flow])
            rows.append(pred_pic)
        save(path + "_flow.png", lambda p: cv2.imwrite(p, pred_pic[:, :, ::-1]))
        save(path + "_flow.flo", lambda p: formats.write_flo(p, flow_hw2))
        valid = output.get("flow_valid")
        valid = None if valid is None else valid.cpu().numpy()
        save(path + "_flow_kitti.png", lambda p: formats.write_kitti_flow_png(p, flow_hw2, valid))
    if save_files:
        write_scene_flow(path, output, image_bgr)  # 3D points and scene flow (.npy, .ply)
    save(path + "_instances.png", lambda p: cv2.imwrite(p, instances_pic[:, :, ::-1]))
    combined = np.concatenate(rows, axis=0)
    save(path + "_combined.png", lambda p: cv2.imwrite(p, combined[:, :, ::-1]))
    data = motions_json(output)
    if metrics is not None:
        data["flow_metrics"] = metrics
    save(path + "_motions.json", lambda p: _dump_json(p, data))
    return metrics, combined


def main(argv=None):
    args = parse_args(argv)
    logger = setup_logger(name="demo")
    cfg = setup_cfg(args)
    if args.dataset:
        prepare_datasets([args.dataset])
    metadata = MetadataCatalog.get(args.dataset or (cfg.DATASETS.TEST or ["__unused"])[0])
    predictor = MotionPredictor(cfg)
    if args.sequence or args.dataset:
        (pairs, total), fps = record_pairs(args, cfg), None
    else:
        pairs, fps = frame_pairs(args, cfg, predictor.required_inputs(), logger)
        total = len(pairs) or None
    fps = args.fps or fps
    if fps is None:
        logger.info("No frame rate (--fps): motions.csv gives no times or speeds in m/s.")
    os.makedirs(args.output, exist_ok=True)
    written, start, model_seconds = [], time.perf_counter(), 0.0
    with ExitStack() as outputs:
        table = outputs.enter_context(MotionsCSV(
            os.path.join(args.output, "motions.csv"), metadata.get("thing_classes", ()), fps,
            args.step, cfg.MODEL.MOTION_RCNN.MOVING_THRESHOLD))
        video = outputs.enter_context(VideoOutput(args.output_video, (fps or 10.0) / args.step)) \
            if args.output_video else None
        for pair in tqdm.tqdm(pairs, total=total, desc="pairs", unit="pair"):
            model_start = time.perf_counter()
            output = predictor(pair["image"], pair["image_next"], pair["depth"],
                               pair["intrinsics"], pair["depth_next"])
            model_seconds += time.perf_counter() - model_start
            name = pair["image_id"].replace("/", "_")
            _, combined = write_pair(args.output, name, pair["image"], output, pair.get("gt"),
                                     metadata, save_files=not args.no_pair_files)
            table.add(pair["image_id"], pair["frame"], output)
            if video is not None:
                video.write(combined)
            written.append(name)
    seconds = time.perf_counter() - start
    logger.info(f"wrote {len(written)} pair(s) to {args.output}"
                + (f" and {args.output_video}" if video is not None and written else "")
                + f" in {seconds:.1f} s ({len(written) / max(seconds, 1e-9):.2f} pairs/s; the model "
                f"alone: {len(written) / max(model_seconds, 1e-9):.2f} pairs/s)")
    return written


if __name__ == "__main__":
    main()
