#!/usr/bin/env python
"""Run a trained model on frame pairs and write pictures, flow files and motions.

    # two frames + depth (+ K; default: Virtual KITTI's fx = fy = 725, cx = 620.5, cy = 187)
    python demo.py --config-file CFG --input t.png t1.png --depth depth.png \
        [--intrinsics FX FY CX CY] --output out/ --opts MODEL.WEIGHTS model_final.pth
    # every pair of a Virtual KITTI 2 layout sequence folder (SceneNN/<variant>)
    python demo.py --config-file CFG --sequence datasets/vkitti2/Scene01/clone --output out/
    # pairs of a registered data set (e.g. the synthetic world's validation split)
    python demo.py --config-file CFG --dataset synthetic_val --max-pairs 8 --output out/

Per pair, named after its image id: ``*_instances.png`` (Detectron2's Visualizer with each
object's speed in m per frame, rotation in degrees, moving or still, and the camera motion),
``*_flow.png`` (torchvision's flow_to_image), ``*_flow_error.png`` (KITTI's error colouring,
when there is GT flow), ``*_flow.flo`` and ``*_flow_kitti.png`` (the predicted flow),
``*_motions.json`` (all motions), ``*_combined.png`` (frame, instances, predicted flow,
GT flow, error, stacked) and, for Motion R-CNN and SfM-Net, the 3D result: ``*_points.npy``,
``*_scene_flow.npy`` (H x W x 3 metres, camera t, NaN where depth is invalid) and
``*_points.ply`` (coloured point cloud; motion_rcnn_d2/utils/scene_flow_files.py). Depth files
are Virtual KITTI's uint16 PNGs in centimetres.
"""
import argparse
import json
import os

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

from motion_rcnn_d2 import MotionDatasetMapper, MotionPredictor, add_motion_rcnn_config  # noqa: E402
from motion_rcnn_d2.data import formats, prepare_datasets  # noqa: E402
from motion_rcnn_d2.data.datasets import load_vkitti2_sequence  # noqa: E402
from motion_rcnn_d2.geometry import flow_metrics  # noqa: E402
from motion_rcnn_d2.utils.scene_flow_files import write_scene_flow  # noqa: E402
from motion_rcnn_d2.utils.visualizer import (  # noqa: E402
    draw_motions,
    flow_error_picture,
    flow_pictures,
)

VKITTI_K = [[725.0, 0.0, 620.5], [0.0, 725.0, 187.0], [0.0, 0.0, 1.0]]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs=2, metavar=("FRAME_T", "FRAME_T1"))
    src.add_argument("--sequence", metavar="DIR", help="a SceneNN/<variant> folder")
    src.add_argument("--dataset", metavar="NAME", help="a registered data set")
    p.add_argument("--depth", metavar="PNG", help="depth of frame t (with --input)")
    p.add_argument("--intrinsics", nargs=4, type=float, metavar=("FX", "FY", "CX", "CY"),
                   help="K of the --input frames (default: Virtual KITTI's)")
    p.add_argument("--max-pairs", type=int, default=None, help="stop after this many pairs")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs")
    args = p.parse_args(argv)
    if args.input and not args.depth:
        p.error("--input needs --depth (Virtual KITTI depth PNG in cm)")
    return args


def setup_cfg(args):
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    return cfg


def pair_records(args, cfg):
    """Dataset dicts (one per pair) from --input, --sequence or --dataset."""
    if args.input:
        K = VKITTI_K
        if args.intrinsics:
            fx, fy, cx, cy = args.intrinsics
            K = [[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]
        image = formats.read_image(args.input[0])
        return [{"file_name": args.input[0], "file_name_next": args.input[1],
                 "depth_file_name": args.depth, "intrinsics": K, "height": image.shape[0],
                 "width": image.shape[1],
                 "image_id": os.path.splitext(os.path.basename(args.input[0]))[0]}]
    if args.sequence:
        classes = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes", ("Car", "Van")) \
            if cfg.DATASETS.TEST else ("Car", "Van")
        return load_vkitti2_sequence(os.path.normpath(args.sequence), tuple(classes),
                                     dataset_name=args.sequence)
    if args.dataset not in DatasetCatalog.list():
        raise SystemExit(f"--dataset {args.dataset!r} is not registered; registered: "
                         f"{', '.join(sorted(DatasetCatalog.list()))}")
    return DatasetCatalog.get(args.dataset)


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


def _write_atomic(path, write):
    """Write with ``write(tmp_path)`` then rename: no half-written file under ``path``."""
    tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
    write(tmp)
    os.replace(tmp, path)


def _dump_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def write_pair(out_dir, name, image_bgr, output, gt, metadata):
    """Write every file of one pair; returns the pair's flow metrics (or None)."""
    rgb = image_bgr[:, :, ::-1]
    inst = output["instances"].to("cpu") if "instances" in output else Instances(rgb.shape[:2])
    camera = output.get("camera_motion")
    instances_pic = draw_motions(rgb, inst, metadata, camera)
    rows, metrics = [rgb, instances_pic], None
    path = os.path.join(out_dir, name)
    if "flow" in output:
        flow = output["flow"].detach().cpu().float()
        flow_hw2 = flow.permute(1, 2, 0).numpy()
        if gt is not None:
            gt_flow, gt_valid = torch.as_tensor(gt[0]).permute(2, 0, 1), torch.as_tensor(gt[1])
            pred_pic, gt_pic = flow_pictures([flow, gt_flow], [None, gt_valid])
            error_pic = flow_error_picture(flow, gt_flow, gt_valid)
            _write_atomic(path + "_flow_error.png",
                          lambda p: cv2.imwrite(p, error_pic[:, :, ::-1]))
            rows += [pred_pic, gt_pic, error_pic]
            metrics = flow_metrics(flow[None], gt_flow[None], gt_valid[None])
        else:
            (pred_pic,) = flow_pictures([flow])
            rows.append(pred_pic)
        _write_atomic(path + "_flow.png", lambda p: cv2.imwrite(p, pred_pic[:, :, ::-1]))
        _write_atomic(path + "_flow.flo", lambda p: formats.write_flo(p, flow_hw2))
        valid = output.get("flow_valid")
        valid = None if valid is None else valid.cpu().numpy()
        _write_atomic(path + "_flow_kitti.png",
                      lambda p: formats.write_kitti_flow_png(p, flow_hw2, valid))
    write_scene_flow(path, output, image_bgr)  # 3D points and scene flow (.npy, .ply)
    _write_atomic(path + "_instances.png", lambda p: cv2.imwrite(p, instances_pic[:, :, ::-1]))
    combined = np.concatenate(rows, axis=0)
    _write_atomic(path + "_combined.png", lambda p: cv2.imwrite(p, combined[:, :, ::-1]))
    data = motions_json(output)
    if metrics is not None:
        data["flow_metrics"] = metrics
    _write_atomic(path + "_motions.json", lambda p: _dump_json(p, data))
    return metrics


def main(argv=None):
    args = parse_args(argv)
    cfg = setup_cfg(args)
    if args.dataset:
        prepare_datasets([args.dataset])
    records = pair_records(args, cfg)[: args.max_pairs]
    metadata = MetadataCatalog.get(args.dataset or (cfg.DATASETS.TEST or ["__unused"])[0])
    predictor = MotionPredictor(cfg)
    reader = MotionDatasetMapper(is_train=False, augmentations=[], image_format="BGR")
    os.makedirs(args.output, exist_ok=True)
    written = []
    for record in tqdm.tqdm(records, desc="pairs"):
        image, dense = reader.read_pair(record)
        K = np.asarray(record["intrinsics"], np.float64)
        output = predictor(image, dense["image_next"], dense["depth"], K, dense.get("depth_next"))
        gt = (dense["flow"], dense["flow_valid"]) if "flow" in dense else None
        name = str(record.get("image_id", len(written))).replace("/", "_")
        write_pair(args.output, name, image, output, gt, metadata)
        written.append(name)
    print(f"wrote {len(written)} pair(s) to {args.output}")
    return written


if __name__ == "__main__":
    main()
