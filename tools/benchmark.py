#!/usr/bin/env python
"""Side-by-side speed and memory of Motion R-CNN against Detectron2's stock Mask R-CNN.

    python tools/benchmark.py                 # 1242x375 and 512x160, CPU, R50 (minutes)
    python tools/benchmark.py --quick         # small size, few repeats (under a minute)
    python tools/benchmark.py --device cuda --output output/benchmark_cuda.json

Everything is measured in ONE process on the same inputs, so that ratios hold on a noisy
machine: the models of a section run in interleaved rounds (warm-up rounds, then --repeats
timed rounds; the median is reported) and every ratio divides two medians of the same run.

Models (tools/benchmark_models.py): "mask_rcnn" = Detectron2's GeneralizedRCNN from
configs/Base-RCNN-FPN.yaml on frame t; "motion_rcnn_6ch" / "motion_rcnn_12ch" =
configs/Base-MotionRCNN-C6-FPN.yaml without / with XYZ input; "mask_rcnn_pad64" (a diagnostic,
not in --quick) = "mask_rcnn" with its input padded to multiples of 64; "mask_rcnn_chunked"
(a diagnostic of inference and memory, not in --quick) = "mask_rcnn" whose mask head reads
16 detections at a time, as Motion R-CNN's does (MODEL.ROI_MASK_HEAD.INFERENCE_CHUNK);
"flownets", "sfmnet". Random weights (nothing is downloaded), the same ResNet depth and
NUM_CLASSES, and RoI settings that give every R-CNN the same number of RoIs (see there). The
inputs are the pairs of a synthetic world (1 sequence, generated into a temporary folder at the
first size), resized by the mapper to each size, which is also their output size; round i of
every section feeds every model pair i (mod their number), so all models see the same data.

Sections: inference ms per pair (batch 1, eval mode, with post-processing and, for Motion
R-CNN, the flow; per-stage medians from forward hooks); training s per iteration (batch 1,
forward + backward + SGD step with lr 0, so that every round sees the same weights; the three
phases' medians); peak memory (the median of --memory-runs fresh subprocesses per model;
CUDA: torch.cuda.max_memory_allocated; CPU: VmHWM - VmRSS before the model was built, the
peak reset between inference and training); compose_flow at the first size with 10 and 100
instances (inference path: instance_index_from_masks + compose_flow_indexed; and
compose_flow with dense masks) as a share of Motion R-CNN (12 channels) inference; the
per-object sweep (OBJECT_SWEEP, off in the Base configs) for 5 and 20 moving detections as a
share of that inference; data
loading: pairs/s of MotionDatasetMapper in Detectron2's train loader with 0 and 2 workers over
the world against the training iteration rate, and how long a training loop fed by 2 workers
waits for data.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see train_net.py)

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import motion_rcnn_d2  # noqa: E402,F401  (compat layer, registrations)
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402

from motion_rcnn_d2 import MotionDatasetMapper  # noqa: E402
from motion_rcnn_d2.data.datasets.vkitti2 import load_vkitti2  # noqa: E402
from motion_rcnn_d2.data.synthetic import generate_world  # noqa: E402
from motion_rcnn_d2.geometry import compose_flow, compose_flow_indexed  # noqa: E402
from motion_rcnn_d2.geometry import euler_angles_to_matrix  # noqa: E402
from motion_rcnn_d2.geometry import instance_index_from_masks  # noqa: E402
from motion_rcnn_d2.modeling.object_sweep import ObjectMotionSweep  # noqa: E402
from detectron2.structures import Boxes, Instances  # noqa: E402

# the sibling modules: this script's folder is the first entry of sys.path
from benchmark_memory import memory_section  # noqa: E402
from benchmark_models import (  # noqa: E402
    CHUNKED, FG_IOU, RCNNS, SAMPLING_RATIO, StageTimer, build, infer, is_cuda, medians, model_cfg,
    now, parameter_counts, sgd, time_rounds, train_step)
from benchmark_report import evaluate_goals, print_tables, write_json  # noqa: E402

MEMORY_MODELS = ("mask_rcnn", "mask_rcnn_chunked", "motion_rcnn_6ch", "motion_rcnn_12ch")
BASELINE = "mask_rcnn"
MOTION = "motion_rcnn_12ch"  # the thesis model, reference of the compose_flow shares
MEMORY_METHODS = {  # indexed by "on CUDA"
    False: "peak RSS (VmHWM) minus the RSS before the model was built, a fresh subprocess per "
           "model, the peak reset between inference and training",
    True: "torch.cuda.max_memory_allocated (weights + activations), a fresh subprocess per model"}
DEFAULTS = {  # (full run, --quick)
    "sizes": (["1242x375", "512x160"], ["256x80"]), "repeats": (5, 2), "detections": (100, 25),
    "world_frames": (9, 3), "memory_runs": (3, 1)}


def _size(text):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WxH, e.g. 1242x375")
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"{text!r} is below 32x32")
    return width, height


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--quick", action="store_true", help="small size, few repeats (< 1 min)")
    p.add_argument("--sizes", nargs="+", type=_size, help="WxH sizes (default 1242x375 "
                   "512x160; quick 256x80); compose_flow and data loading use the first")
    p.add_argument("--depth", type=int, default=50, help="ResNet depth of every R-CNN")
    p.add_argument("--repeats", type=int, help="timed rounds (default 5; quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--detections", type=int, help="TEST.DETECTIONS_PER_IMAGE of every R-CNN "
                   "(default 100; quick 25)")
    p.add_argument("--world-frames", type=int, help="frames of the synthetic world (default 9; "
                   "quick 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    p.add_argument("--memory-runs", type=int, help="fresh processes per model and size whose "
                   "median peak is reported (default 3; quick 1)")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top ops of Mask / Motion R-CNN inference")
    p.add_argument("--output", default="output/benchmark.json", help="JSON result file")
    args = p.parse_args(argv)
    for key, values in DEFAULTS.items():
        if getattr(args, key) is None:
            value = values[args.quick]
            setattr(args, key, [_size(v) for v in value] if key == "sizes" else value)
    if (min(args.repeats, args.detections, args.memory_runs) < 1 or args.warmup < 0
            or args.world_frames < 2):
        p.error("--repeats, --detections and --memory-runs must be >= 1, --warmup >= 0, "
                "--world-frames >= 2")
    return args


def _key(size):
    return f"{size[0]}x{size[1]}"


def _row(value, baseline):
    return {"value": value, "ratio": value / baseline}


# ---------------------------------------------------------------------------- inputs
def make_world(folder, size, frames):
    """Dataset dicts of a 1-sequence synthetic world of `frames` frames at `size` (W, H)."""
    generate_world(folder, sequences=1, frames=frames, width=size[0], height=size[1], seed=0,
                   progress=False)
    return load_vkitti2(folder, "clone", dataset_name="benchmark")


def pair_at(record, size):
    """Model input (with GT) of a dataset dict, resized to `size` (W, H) by the mapper, whose
    output size (masks, flow) is `size` too, as for a data set of that size."""
    resize = [] if (record["width"], record["height"]) == size else [T.Resize(size[::-1])]
    x = MotionDatasetMapper(is_train=False, augmentations=resize)(record)
    x["width"], x["height"] = size
    return x


def box_masks(num, height, width, generator):
    """(num, H, W) bool car-like rectangles at random places (sizes scale with the width)."""
    scale = width / 1242.0
    w = (torch.rand(num, generator=generator) * 180 + 20) * scale
    h = w * (torch.rand(num, generator=generator) * 0.4 + 0.4)
    x0 = torch.rand(num, generator=generator) * (width - w)
    y0 = torch.rand(num, generator=generator) * (height - h).clamp(min=0)
    u = torch.arange(width)[None, None]
    v = torch.arange(height)[None, :, None]
    return ((u >= x0[:, None, None]) & (u < (x0 + w)[:, None, None])
            & (v >= y0[:, None, None]) & (v < (y0 + h)[:, None, None]))


# -------------------------------------------------------------------------- sections
def inference_section(models, pairs, args):
    """Inference ms of every model; round i runs every model on pairs[i % len(pairs)]. The
    R-CNNs' stage times come from the timed rounds on the CPU, from extra rounds on a GPU
    (their hooks synchronise)."""
    rcnns = [name for name in RCNNS + (CHUNKED,) if name in models]
    timers, detections = {}, {name: [] for name in rcnns}

    def call(i, name):
        timer = timers.get(name)
        if timer is not None:
            timer.start()
        output = infer(models[name], pairs[i % len(pairs)])
        if timer is not None:
            timer.stop()
        if name in detections:
            detections[name].append(len(output["instances"]))

    calls = {name: (lambda i, n=name: call(i, n)) for name in models}
    on_cpu = not is_cuda(args.device)
    timers.update({name: StageTimer(models[name], args.device) for name in rcnns if on_cpu})
    seconds = time_rounds(calls, args.warmup, args.repeats, args.device)
    if not on_cpu:
        timers.update({name: StageTimer(models[name], args.device) for name in rcnns})
        time_rounds({name: calls[name] for name in rcnns}, 0, args.repeats, args.device)
    out = {name: _row(1000 * seconds[name], 1000 * seconds[BASELINE]) for name in models}
    for name, timer in timers.items():
        timer.close()
        out[name]["stages_ms"] = medians(timer.rounds[-args.repeats:])
        out[name]["proposals"] = timer.proposals
        out[name]["detections"] = statistics.median(detections[name])
    return out


def training_section(models, pairs, args):
    """Training s/iteration of the R-CNNs (round i: pairs[i % len(pairs)]), with the median
    forward / backward / optimizer seconds and the foreground RoIs."""
    rcnns = [name for name in RCNNS if name in models]
    optimizers = {name: sgd(models[name]) for name in rcnns}
    phases = {name: [] for name in rcnns}
    for name in rcnns:
        models[name].train()
    calls = {name: (lambda i, n=name: train_step(models[n], optimizers[n], pairs[i % len(pairs)],
                                                 args.device, phases[n]))
             for name in rcnns}
    try:
        seconds = time_rounds(calls, args.warmup, args.repeats, args.device)
    finally:
        for name in rcnns:
            models[name].eval()
            models[name].zero_grad(set_to_none=True)
    out = {name: _row(seconds[name], seconds[BASELINE]) for name in rcnns}
    for name in rcnns:
        out[name]["phases_s"] = medians(phases[name][-args.repeats:])
        out[name]["fg_rois"] = out[name]["phases_s"].pop("fg_rois")
    return out


def compose_section(x, motion_ms, args, counts=(10, 100)):
    """compose_flow costs at the size of `x` with `counts` instances (module docstring)."""
    device = args.device
    height, width = x["depth"].shape[-2:]
    depth = x["depth"][None].to(device)
    intrinsics = x["intrinsics"][None].to(device)
    gen = torch.Generator().manual_seed(0)
    camera = (euler_angles_to_matrix(torch.tensor([[0.0, 0.01, 0.0]])).to(device),
              torch.tensor([[0.0, 0.0, -0.8]], device=device))
    out = {"motion_rcnn_inference_ms": motion_ms, "instances": {}}
    for num in counts:
        masks = box_masks(num, height, width, gen).to(device)
        dense = masks[None].float()
        scores = torch.rand(num, generator=gen).to(device)
        motion = [euler_angles_to_matrix((torch.rand(1, num, 3, generator=gen) - 0.5) * 0.1),
                  torch.randn(1, num, 3, generator=gen),
                  torch.randn(1, num, 3, generator=gen) * 3 + torch.tensor([0.0, 1.0, 15.0])]
        motion = [m.to(device) for m in motion]
        index = instance_index_from_masks(masks, scores)[None]
        calls = {
            "index_ms": lambda _: instance_index_from_masks(masks, scores),
            "indexed_ms": lambda _: compose_flow_indexed(depth, intrinsics, index, *motion,
                                                         *camera),
            "dense_ms": lambda _: compose_flow(depth, intrinsics, dense, *motion, *camera),
        }
        row = {k: 1000 * v for k, v in time_rounds(calls, args.warmup, args.repeats,
                                                   device).items()}
        row["inference_path_ms"] = row["index_ms"] + row["indexed_ms"]
        row["inference_path_share"] = row["inference_path_ms"] / motion_ms
        row["dense_share"] = row["dense_ms"] / motion_ms
        out["instances"][str(num)] = row
    return out


def object_sweep_section(x, motion_ms, args, counts=(5, 20)):
    """`ObjectMotionSweep` (the default MODEL.MOTION_RCNN.OBJECT_SWEEP) at the size of `x`
    for `counts` moving detections (car-like boxes, full masks), ms per pair and as a share of
    Motion R-CNN (12 channels) inference without it."""
    device = args.device
    sweep = ObjectMotionSweep(model_cfg(MOTION, args.depth, device))
    height, width = x["depth"].shape[-2:]
    gray_t, gray_t1 = (((x[k].to(device).float() - 110.0) / 57.0).mean(dim=0)
                       for k in ("image", "image_next"))
    depth, depth_t1 = (x[k][0].to(device) for k in ("depth", "depth_next"))
    intrinsics = x["intrinsics"].to(device)
    camera = (euler_angles_to_matrix(torch.tensor([0.0, 0.01, 0.0])).to(device),
              torch.tensor([0.0, 0.0, -0.8], device=device))
    gen = torch.Generator().manual_seed(0)
    out = {"size": f"{width}x{height}", "motion_rcnn_inference_ms": motion_ms, "detections": {}}
    for num in counts:
        masks = box_masks(num, height, width, gen)
        boxes = torch.stack([torch.tensor([m.any(0).nonzero().min(), m.any(1).nonzero().min(),
                                           m.any(0).nonzero().max() + 1,
                                           m.any(1).nonzero().max() + 1]) for m in masks])

        def refine(_, boxes=boxes.float().to(device), num=num):
            detections = Instances((height, width), pred_boxes=Boxes(boxes),
                                   pred_masks=torch.ones(num, 1, 28, 28, device=device),
                                   pred_rotations=torch.eye(3, device=device).repeat(num, 1, 1),
                                   pred_translations=torch.zeros(num, 3, device=device),
                                   pred_pivots=torch.tensor([[0.0, 1.0, 15.0]] * num,
                                                            device=device),
                                   pred_moving_scores=torch.ones(num, device=device))
            sweep(detections, gray_t, gray_t1, depth, depth_t1, intrinsics, *camera, 0.5)

        ms = 1000 * time_rounds({"sweep": refine}, args.warmup, args.repeats, device)["sweep"]
        out["detections"][str(num)] = {"ms": ms, "share": ms / motion_ms}
    return out


def data_section(dicts, size, model, train_s, args):
    """Mapper throughput with 0 and 2 workers vs the training rate, and the data wait of a
    training loop fed by the 2-worker loader."""
    cfg = model_cfg(MOTION, args.depth, args.device, args.detections)
    cfg.INPUT.MIN_SIZE_TRAIN = (size[1],)
    cfg.INPUT.MAX_SIZE_TRAIN = size[0]
    cfg.INPUT.RANDOM_FLIP = "horizontal"
    mapper = MotionDatasetMapper(cfg, is_train=True)
    count = 6 if args.quick else 24

    def loader(workers):
        return iter(build_detection_train_loader(dataset=dicts, mapper=mapper,
                                                 total_batch_size=1, num_workers=workers,
                                                 aspect_ratio_grouping=False))

    out = {"size": _key(size), "training_s_per_iter": train_s, "pairs_per_s": {}}
    for workers in (0, 2):
        batches = loader(workers)
        for _ in range(1 + 2 * workers):  # start-up and the prefetched batches
            next(batches)
        start = time.perf_counter()
        for _ in range(count):
            next(batches)
        out["pairs_per_s"][str(workers)] = count / (time.perf_counter() - start)
        del batches
    rate = 1.0 / train_s
    out["training_iters_per_s"] = rate
    out["ratio"] = {w: pps / rate for w, pps in out["pairs_per_s"].items()}
    batches, optimizer, waits = loader(2), sgd(model), []
    model.train()
    try:
        for _ in range(args.repeats + 1):
            start = now(args.device)
            batch = next(batches)
            waits.append(time.perf_counter() - start)
            train_step(model, optimizer, batch[0], args.device)
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
        del batches
    out["data_wait_ms"] = 1000 * statistics.median(waits[1:])
    out["data_wait_share"] = out["data_wait_ms"] / (1000 * train_s)
    return out


# ------------------------------------------------------------------------------- run
class Clock:
    """Adds the seconds since the previous call to `totals[name]` (the sections' wall time)."""

    def __init__(self, totals):
        self.totals, self.last = totals, time.perf_counter()

    def __call__(self, name):
        current = time.perf_counter()
        self.totals[name] = self.totals.get(name, 0.0) + current - self.last
        self.last = current


def profile_models(models, x):
    from torch.profiler import profile

    for name in (BASELINE, MOTION):
        with profile() as prof:
            infer(models[name], x)
        print(f"\ntorch.profiler, {name} inference\n"
              + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def run(args):
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    result = {"settings": {
        "device": args.device, "threads": threads, "resnet_depth": args.depth,
        "sizes": [_key(s) for s in args.sizes], "warmup": args.warmup, "repeats": args.repeats,
        "quick": args.quick, "memory_runs": args.memory_runs, "batch_size": 1, "num_classes": 2,
        "score_thresh_test": 0.0,
        "detections_per_image": args.detections, "pooler_sampling_ratio": SAMPLING_RATIO,
        "rpn_nms_thresh": 1.0, "roi_nms_thresh_test": 1.0, "roi_fg_iou": FG_IOU,
        "torch": torch.__version__,
        "models": {"mask_rcnn": "configs/Base-RCNN-FPN.yaml (3 channels)",
                   "mask_rcnn_pad64": "mask_rcnn, input padded to multiples of 64",
                   "mask_rcnn_chunked": "mask_rcnn, mask head 16 detections at a time (memory)",
                   "motion_rcnn_6ch": "configs/Base-MotionRCNN-C6-FPN.yaml, XYZ_INPUT False",
                   "motion_rcnn_12ch": "configs/Base-MotionRCNN-C6-FPN.yaml, XYZ_INPUT True",
                   "flownets": "configs/Base-FlowNetS.yaml", "sfmnet": "configs/Base-SfMNet.yaml"},
        "section_s": {},
    }}
    clock = Clock(result["settings"]["section_s"])
    # diagnostics: padding to 64 (timed like the R-CNNs), the chunked mask head (inference)
    kinds = [k for k in RCNNS if not (args.quick and k == "mask_rcnn_pad64")]
    kinds += [] if args.quick else [CHUNKED]
    models = {kind: build(kind, args.depth, args.device, args.detections)
              for kind in kinds + ["flownets", "sfmnet"]}
    result["settings"]["parameters"] = {k: parameter_counts(m) for k, m in models.items()}
    with tempfile.TemporaryDirectory(prefix="motion_rcnn_benchmark_") as tmp:
        dicts = make_world(os.path.join(tmp, "world"), args.sizes[0], args.world_frames)
        dicts.sort(key=lambda d: -len(d["annotations"]))  # pairs[0]: the most instances
        pairs = {_key(size): [pair_at(d, size) for d in dicts] for size in args.sizes}
        clock("setup")
        first = _key(args.sizes[0])
        result["settings"]["pairs"] = len(dicts)
        result["settings"]["instances_per_pair"] = [len(x["instances"]) for x in pairs[first]]
        result["inference"], result["training"] = {}, {}
        for size in args.sizes:
            result["inference"][_key(size)] = inference_section(models, pairs[_key(size)], args)
            clock("inference")
            result["training"][_key(size)] = training_section(models, pairs[_key(size)], args)
            clock("training")
        inputs = {key: x[0] for key, x in pairs.items()}
        result["compose_flow"] = dict(size=first, **compose_section(
            inputs[first], result["inference"][first][MOTION]["value"], args))
        clock("compose_flow")
        result["object_sweep"] = object_sweep_section(
            inputs[first], result["inference"][first][MOTION]["value"], args)
        clock("object_sweep")
        result["data"] = data_section(dicts, args.sizes[0], models[MOTION],
                                      result["training"][first][MOTION]["value"], args)
        clock("data")
        if args.profile:
            profile_models(models, inputs[first])
        if not args.skip_memory:
            del models  # the subprocesses need the memory more
            path = os.path.join(tmp, "inputs.pt")
            torch.save(inputs, path)
            cuda = is_cuda(args.device)
            result["memory"] = {"method": f"{MEMORY_METHODS[cuda]}; median of "
                                          f"{args.memory_runs} run(s)"}
            for size in inputs:
                specs = {kind: {"kind": kind, "depth": args.depth, "device": args.device,
                                "size": size, "inputs": path, "threads": threads,
                                "detections": args.detections} for kind in MEMORY_MODELS}
                result["memory"][size] = memory_section(specs, BASELINE, args.memory_runs)
            clock("memory")
    result["goals"] = evaluate_goals(result)
    return result


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    result = run(args)
    result["settings"]["wall_s"] = time.perf_counter() - start
    print_tables(result)
    write_json(args.output, result)
    print(f"\nwritten {args.output} ({result['settings']['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
