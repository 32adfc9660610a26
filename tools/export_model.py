#!/usr/bin/env python
"""Export a Motion R-CNN, FlowNetS or SfM-Net model for deployment.

    python tools/export_model.py --config-file CFG --format {export,onnx,torchscript} \\
        --output DIR [--input-size H W] [--benchmark N] [--opts MODEL.WEIGHTS model_final.pth ...]

As Detectron2's tools/deploy/export_model.py: Detectron2's TracingAdapter flattens the dict
inputs and the outputs. ``export`` writes a torch.export program (DIR/model.pt2,
torch.export.load), ``onnx`` the same program as ONNX (DIR/model.onnx, torch.onnx.export with
dynamo=True; run once with onnxruntime when it is installed), ``torchscript`` the
torch.jit.trace of the adapter (DIR/model.ts) for Detectron2's deploy tools. DIR/export.json
names the inputs and outputs in order, what is exported and what is not (and why), and holds
the outputs schema. Every artefact is specialised to one input size (--input-size, default
the config's INPUT.MIN_SIZE_TEST x MAX_SIZE_TEST). What each model exports:
motion_rcnn_d2/engine/export.py. The files are written to a temporary folder beside DIR and
moved into DIR when all are complete.
"""
import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import motion_rcnn_d2  # noqa: E402,F401  (registers everything)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.logger import setup_logger  # noqa: E402
from motion_rcnn_d2 import add_motion_rcnn_config  # noqa: E402
from motion_rcnn_d2.engine.checkpoint import MotionCheckpointer  # noqa: E402
from motion_rcnn_d2.engine.export import (  # noqa: E402
    ARTEFACTS, FORMATS, exported_runner, load_artefact, plan_export, sample_inputs,
    write_manifest)

logger = logging.getLogger("motion_rcnn_d2.export")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config-file", required=True, metavar="FILE")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--output", required=True, metavar="DIR")
    p.add_argument("--input-size", nargs=2, type=int, metavar=("H", "W"),
                   help="input size the artefact takes (default: the config's test size)")
    p.add_argument("--benchmark", type=int, default=0, metavar="N",
                   help="time N runs of the eager model and of the artefact after warm-up")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER,
                   help="config overrides as KEY VALUE pairs")
    return p.parse_args(argv)


def setup_cfg(args):
    if not os.path.isfile(args.config_file):
        raise FileNotFoundError(f"--config-file {args.config_file!r}: no such file")
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    weights = cfg.MODEL.WEIGHTS
    if weights and "://" not in weights and not os.path.isfile(weights):
        raise FileNotFoundError(
            f"MODEL.WEIGHTS {weights!r} (from --opts or {args.config_file}): no such file. Give "
            "a checkpoint of this config (--opts MODEL.WEIGHTS output/.../model_final.pth), or "
            "MODEL.WEIGHTS '' for random weights.")
    cfg.freeze()
    return cfg


def save_artefact(plan, fmt, path):
    """Write the plan's adapter in format ``fmt`` to ``path``."""
    if fmt == "torchscript":
        torch.jit.save(torch.jit.trace(plan.adapter, plan.flat_inputs, check_trace=False), path)
        return
    program = torch.export.export(plan.adapter, plan.flat_inputs, strict=False)
    if fmt == "export":
        torch.export.save(program, path)
        return
    try:
        import onnxscript  # noqa: F401  (torch.onnx's dynamo exporter needs it)
    except ImportError as error:
        raise ImportError("--format onnx needs onnx and onnxscript: pip install "
                          "'motion_rcnn_d2[export]'") from error
    torch.onnx.export(program, (), dynamo=True, input_names=plan.input_names).save(path)


def max_difference(a, b):
    return max([float((x.double() - y.double()).abs().max()) for x, y in zip(a, b)
                if x.numel()] or [0.0])


def median_seconds(functions, runs, warmup=2):
    """Median seconds of each function over ``runs`` calls after ``warmup`` calls each, the
    functions called in turn so that a change of the machine's load reaches all alike."""
    times = [[] for _ in functions]
    for i in range(warmup + runs):
        for fn, spent in zip(functions, times):
            start = time.perf_counter()
            fn()
            if i >= warmup:
                spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def move_into(tmp, output):
    """Move the complete files of ``tmp`` into ``output`` (each by an atomic rename)."""
    if not os.path.isdir(output) or not os.listdir(output):
        if os.path.isdir(output):
            os.rmdir(output)
        os.replace(tmp, output)
        return
    for name in os.listdir(tmp):
        os.replace(os.path.join(tmp, name), os.path.join(output, name))
    shutil.rmtree(tmp)


def main(argv=None):
    args = parse_args(argv)
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise NotADirectoryError(f"--output {args.output!r} is a file: give a folder")
    setup_logger(name="motion_rcnn_d2")
    cfg = setup_cfg(args)
    height, width = args.input_size or (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)
    model = build_model(cfg)
    MotionCheckpointer.from_config(cfg, model).load(cfg.MODEL.WEIGHTS)
    model.eval()
    inputs = sample_inputs(model, height, width)
    plan = plan_export(model, args.format, inputs)
    logger.info("exported: %s", plan.exported)
    if plan.partial:
        logger.warning("partial export (--format %s): %s", args.format, plan.partial)
    parent = os.path.dirname(os.path.abspath(args.output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(args.output)}.tmp-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private; DIR becomes an ordinary one
    try:
        path = os.path.join(tmp, ARTEFACTS[args.format])
        save_artefact(plan, args.format, path)
        with torch.no_grad():
            expected = plan.adapter(*plan.flat_inputs)
        outputs = plan.adapter.outputs_schema(expected)
        write_manifest(os.path.join(tmp, "export.json"), plan, args.format, height, width,
                       outputs)
        artefact = None
        if args.format != "onnx" or _has_onnxruntime():
            artefact = load_artefact(path)
            with torch.no_grad():
                diff = max_difference(artefact(*plan.flat_inputs), expected)
            logger.info("artefact run once on the sample input: max |artefact - eager| = %.3g",
                        diff)
        else:
            logger.warning("onnxruntime is not installed: %s was written but not run", path)
        if args.benchmark and artefact is not None:
            run = exported_runner(model, args.format, artefact, plan.adapter.outputs_schema)
            with torch.no_grad():
                eager, exported = median_seconds([lambda: model([inputs]), lambda: run(inputs)],
                                                 args.benchmark)
            with torch.no_grad():
                detections = len(run(inputs).get("instances", ()))
            logger.info("inference at %dx%d, median of %d: eager %.1f ms, exported %.1f ms, "
                        "ratio exported / eager %.2f%s", width, height, args.benchmark,
                        1e3 * eager, 1e3 * exported, exported / eager,
                        f" ({detections} detections)" if detections else "")
        move_into(tmp, args.output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %s", os.path.join(args.output, ARTEFACTS[args.format]))
    return os.path.join(args.output, ARTEFACTS[args.format])


def _has_onnxruntime():
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
