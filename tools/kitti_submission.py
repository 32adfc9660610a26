#!/usr/bin/env python
"""Write a KITTI 2015 scene flow submission: a model's results on the testing set in KITTI's
exact 16-bit PNG formats.

    python tools/kitti_submission.py --config-file CFG --input-dir <KITTI>/testing \
        --disparity <stereo method's %06d_10.png folder> [--disparity-next <%06d_11.png folder>] \
        --output submission/ [--opts MODEL.WEIGHTS model_final.pth]
    cd submission && zip -r ../submission.zip flow disp_0 disp_1   # upload that archive

Input: ``<input-dir>/image_2/%06d_10.png, %06d_11.png`` and ``calib_cam_to_cam/%06d.txt``; the
depth of frame t (and t+1) is fx b / d from the given disparities (KITTI's 16-bit format; the
testing set has no ground truth ones), as `load_kitti2015` does. Output (``%06d`` = pair):

- ``flow/%06d_10.png``: the output flow, uint16 (R, G, B) = (u * 64 + 2^15, v * 64 + 2^15, valid),
  rounded (within 1/128 px); invalid pixels (0, 0, 0) (the devkit fills them);
- ``disp_0/%06d_10.png``, ``disp_1/%06d_10.png``, for models with a 3D result (Motion R-CNN,
  SfM-Net): d_0 = fx b / Z and d_1 = fx b / (Z + dZ) in frame t's grid, uint16 d * 256 (0 =
  invalid).

Every file is written under a temporary name and renamed (no half-written file), with a progress
bar; the disparity file names follow KITTI's (%06d_10.png in all three folders).
"""
import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tqdm  # noqa: E402

import motion_rcnn_d2  # noqa: E402,F401
from detectron2.config import get_cfg  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402

from motion_rcnn_d2 import MotionPredictor, add_motion_rcnn_config  # noqa: E402
from motion_rcnn_d2.data import formats  # noqa: E402
from motion_rcnn_d2.data.datasets.kitti2015 import load_kitti2015_folder  # noqa: E402
from motion_rcnn_d2.evaluation.kitti_evaluator import estimated_disparities  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--input-dir", required=True, metavar="DIR",
                   help="KITTI 2015 'testing' folder (image_2/, calib_cam_to_cam/)")
    p.add_argument("--disparity", metavar="DIR",
                   help="disparities %%06d_10.png of frame t (KITTI 16-bit), for the depth")
    p.add_argument("--disparity-next", metavar="DIR",
                   help="disparities %%06d_11.png of frame t+1 (its own view), optional")
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--max-pairs", type=int, default=None, help="stop after this many pairs")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs")
    return p.parse_args(argv)


def _depth(record, key):
    return formats.read_kitti_depth_png(record[key], record["disparity_to_depth"]) \
        if key in record else None


def write_submission(predictor, records, output_dir):
    """Run `predictor` on each record and write its files; returns {folder: files written}."""
    written = {"flow": 0, "disp_0": 0, "disp_1": 0}
    for record in tqdm.tqdm(records, desc="KITTI submission", unit="pair"):
        image = formats.read_image(record["file_name"])
        image_next = formats.read_image(record["file_name_next"])
        out = predictor(image, image_next, _depth(record, "depth_file_name"),
                        record["intrinsics"], _depth(record, "depth_file_name_next"))
        name = f"{record['image_id']}_10.png"
        flow = out["flow"].detach().cpu().float().permute(1, 2, 0).numpy()
        valid = out["flow_valid"].cpu().numpy() if "flow_valid" in out else None
        formats.write_kitti_flow_png(os.path.join(output_dir, "flow", name), flow, valid)
        written["flow"] += 1
        disparities = estimated_disparities(out, record["disparity_to_depth"])
        for folder, (disparity, disparity_valid) in zip(("disp_0", "disp_1"), disparities or ()):
            disparity[~disparity_valid] = 0
            formats.write_kitti_disparity_png(os.path.join(output_dir, folder, name), disparity)
            written[folder] += 1
    return written


def main(argv=None):
    args = parse_args(argv)
    setup_logger(name="motion_rcnn_d2")
    disparity, disparity_next = (os.path.abspath(d) if d else None
                                 for d in (args.disparity, args.disparity_next))
    records = load_kitti2015_folder(os.path.normpath(args.input_dir), False,
                                    dataset_name=args.input_dir, disparity_dir=disparity,
                                    disparity_next_dir=disparity_next)[: args.max_pairs]
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    written = write_submission(MotionPredictor(cfg), records, args.output)
    print(f"wrote {', '.join(f'{n} {k}/' for k, n in written.items() if n)} files to "
          f"{args.output}; zip them: cd {args.output} && zip -r ../submission.zip "
          f"{' '.join(k for k, n in written.items() if n)}")
    return written


if __name__ == "__main__":
    main()
