#!/usr/bin/env python
"""Side-by-side speed and memory of Motion R-CNN against Detectron2's stock Mask R-CNN.

    python tools/benchmark.py                 # 1242x375 and 512x160, CPU, R50 (minutes)
    python tools/benchmark.py --quick         # small size, few repeats (under a minute)
    python tools/benchmark.py --device cuda --output output/benchmark_cuda.json

Everything is measured in ONE process on the same inputs, so that ratios hold on a noisy
machine: the models of a section run in interleaved rounds (warm-up rounds, then --repeats
timed rounds; the median is reported) and every ratio divides two medians of the same run.

Models (random weights, nothing is downloaded; same ResNet depth, NUM_CLASSES and RoI
settings): "mask_rcnn" = GeneralizedRCNN from configs/Base-RCNN-FPN.yaml on frame t (3
channels); "motion_rcnn_6ch" / "motion_rcnn_12ch" = configs/Base-MotionRCNN-C6-FPN.yaml
without / with XYZ input. All R-CNNs use ROI_HEADS.SCORE_THRESH_TEST = 0 and
TEST.DETECTIONS_PER_IMAGE = 100: random weights give near-uniform class scores, so every
model keeps its 100 best detections and the mask head, the motion head and the flow
composition see the same number of RoIs in every model (the count is recorded). PIXEL_STD is
the ImageNet std and XYZ_SCALE 10 m for all (moderate activations; no effect on the cost).

Sections: inference ms per pair (batch 1, eval mode, with post-processing; also FlowNetS and
SfM-Net); training s per iteration (batch 1, forward + backward + SGD step with lr 0 so that
every round sees the same weights); peak memory (each model in a fresh subprocess: CUDA
torch.cuda.max_memory_allocated; CPU the increase of the peak RSS, ru_maxrss, over the RSS
after the imports, inference first, then training, whose peak therefore also bounds
inference); compose_flow at the first size with 10 and 100 instances (the inference path
instance_index_from_masks + compose_flow_indexed, and compose_flow with dense masks) as a
share of Motion R-CNN inference; data loading: pairs/s of MotionDatasetMapper in Detectron2's
train loader with 0 and 2 workers over a small synthetic world generated into a temporary
folder, against the training iteration rate, and the time a training loop fed by the 2-worker
loader waits for data. Per-stage times of each R-CNN (forward hooks) explain the ratios.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch (see train_net.py)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

import motion_rcnn_d2  # noqa: E402,F401  (compat layer, registrations)
from detectron2.config import get_cfg  # noqa: E402
from detectron2.data import build_detection_train_loader  # noqa: E402
from detectron2.data import transforms as T  # noqa: E402
from detectron2.modeling import build_model  # noqa: E402
from detectron2.utils.events import EventStorage  # noqa: E402

from motion_rcnn_d2 import MotionDatasetMapper, add_motion_rcnn_config  # noqa: E402
from motion_rcnn_d2.data.datasets.vkitti2 import load_vkitti2  # noqa: E402
from motion_rcnn_d2.data.synthetic import generate_world  # noqa: E402
from motion_rcnn_d2.geometry import compose_flow, compose_flow_indexed  # noqa: E402
from motion_rcnn_d2.geometry import euler_angles_to_matrix  # noqa: E402
from motion_rcnn_d2.modeling.meta_arch.motion_rcnn import instance_index_from_masks  # noqa: E402

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
RCNNS = ("mask_rcnn", "motion_rcnn_6ch", "motion_rcnn_12ch")
BASELINE = "mask_rcnn"
MOTION = "motion_rcnn_12ch"  # the thesis model, reference of the compose_flow shares
STAGES = ("backbone", "proposal_generator", "roi_heads.box_pooler", "roi_heads.box_head",
          "roi_heads.box_predictor", "roi_heads.mask_pooler", "roi_heads.mask_head",
          "roi_heads.motion_head", "camera_head")
GOALS = {"inference_ratio": 1.15, "training_ratio": 1.25, "compose_flow_share": 0.05,
         "loader_over_training": 1.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--quick", action="store_true", help="small size, few repeats (< 1 min)")
    p.add_argument("--sizes", nargs="+", help="WxH sizes (default 1242x375 512x160; quick "
                   "256x80); compose_flow and data loading use the first")
    p.add_argument("--depth", type=int, default=50, help="ResNet depth of every R-CNN")
    p.add_argument("--repeats", type=int, help="timed rounds (default 5; quick 2)")
    p.add_argument("--warmup", type=int, help="untimed rounds first (default 1)")
    p.add_argument("--world-frames", type=int, help="frames of the temporary world (default 9;"
                   " quick 3)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    p.add_argument("--skip-memory", action="store_true", help="no memory subprocesses")
    p.add_argument("--profile", action="store_true",
                   help="also print torch.profiler's top ops of Mask / Motion R-CNN inference")
    p.add_argument("--output", default="output/benchmark.json", help="JSON result file")
    p.add_argument("--memory-child", help=argparse.SUPPRESS)  # internal: one memory probe
    args = p.parse_args(argv)
    args.sizes = [_size(s) for s in (args.sizes or (["256x80"] if args.quick
                                                    else ["1242x375", "512x160"]))]
    if args.repeats is None:
        args.repeats = 2 if args.quick else 5
    if args.warmup is None:
        args.warmup = 1
    if args.world_frames is None:
        args.world_frames = 3 if args.quick else 9
    if args.repeats < 1 or args.warmup < 0 or args.world_frames < 2:
        p.error("--repeats must be >= 1, --warmup >= 0 and --world-frames >= 2")
    return args


def _size(text):
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: {text!r} is not WxH, e.g. 1242x375")
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"--sizes: {text!r} is below 32x32")
    return width, height


def _key(size):
    return f"{size[0]}x{size[1]}"


# ---------------------------------------------------------------------------- models
def model_cfg(kind, depth, device):
    """The Detectron2 config of one benchmarked model (module docstring)."""
    cfg = get_cfg()
    add_motion_rcnn_config(cfg)
    name = {"mask_rcnn": "Base-RCNN-FPN.yaml", "flownets": "Base-FlowNetS.yaml",
            "sfmnet": "Base-SfMNet.yaml"}.get(kind, "Base-MotionRCNN-C6-FPN.yaml")
    cfg.merge_from_file(os.path.join(CONFIGS, name))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = device
    if kind in RCNNS:
        cfg.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]
        cfg.MODEL.RESNETS.DEPTH = depth
        if depth in (18, 34):
            cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
        cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
        cfg.TEST.DETECTIONS_PER_IMAGE = 100
        cfg.MODEL.MOTION_RCNN.XYZ_INPUT = kind == "motion_rcnn_12ch"
        cfg.MODEL.MOTION_RCNN.XYZ_SCALE = 10.0
    return cfg


def build(kind, depth, device):
    torch.manual_seed(0)
    return build_model(model_cfg(kind, depth, device)).eval()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def infer(model, x):
    with torch.no_grad():
        return model([x])[0]


def train_step(model, optimizer, x):
    """One training iteration on `x`: forward, backward, optimizer step."""
    with EventStorage():
        losses = model([x])
    optimizer.zero_grad(set_to_none=True)
    sum(losses.values()).backward()
    optimizer.step()


def sgd(model):
    """SGD with momentum and weight decay but lr 0: the full cost of a step, unchanged weights."""
    return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0,
                           momentum=0.9, weight_decay=1e-4)


def time_rounds(calls, warmup, repeats, device):
    """Median seconds of each callable over `repeats` interleaved rounds (after `warmup`)."""
    for _ in range(warmup):
        for fn in calls.values():
            fn()
    samples = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            torch.manual_seed(0)  # same RPN / RoI sampling in every round
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(s) for name, s in samples.items()}


def stage_times(model, x, device):
    """ms spent in each submodule of STAGES during one inference (forward hooks), plus
    "other" (pre-processing, post-processing, flow composition)."""
    spent, handles = {}, []
    for name in STAGES:
        module = model
        for part in name.split("."):
            module = getattr(module, part, None)
        if not isinstance(module, torch.nn.Module):
            continue

        def pre(_module, _inputs, name=name):
            _sync(device)
            spent[name] = spent.get(name, 0.0) - time.perf_counter()

        def post(_module, _inputs, _outputs, name=name):
            _sync(device)
            spent[name] += time.perf_counter()

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    _sync(device)
    start = time.perf_counter()
    infer(model, x)
    _sync(device)
    total = time.perf_counter() - start
    for handle in handles:
        handle.remove()
    out = {name: 1000 * t for name, t in spent.items()}
    out["other"] = 1000 * total - sum(out.values())
    return out


def _row(value, baseline):
    return {"value": value, "ratio": value / baseline}


# ---------------------------------------------------------------------------- inputs
def make_world(folder, size, frames):
    """Dataset dicts of a 1-sequence synthetic world of `frames` frames at `size` (W, H)."""
    generate_world(folder, sequences=1, frames=frames, width=size[0], height=size[1], seed=0,
                   progress=False)
    return load_vkitti2(folder, "clone", dataset_name="benchmark")


def pair_at(record, size):
    """Model input (with GT) of a dataset dict, resized to `size` (W, H) by the mapper."""
    resize = [] if (record["width"], record["height"]) == size else [T.Resize(size[::-1])]
    return MotionDatasetMapper(is_train=False, augmentations=resize)(record)


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
def inference_section(models, x, args):
    calls = {name: (lambda m=m: infer(m, x)) for name, m in models.items()}
    ms = {k: 1000 * v for k, v in time_rounds(calls, args.warmup, args.repeats,
                                             args.device).items()}
    out = {}
    for name, model in models.items():
        out[name] = _row(ms[name], ms[BASELINE])
        if name in RCNNS:
            out[name]["detections"] = len(infer(model, x)["instances"])
            out[name]["stages_ms"] = stage_times(model, x, args.device)
    return out


def training_section(models, x, args):
    optimizers = {name: sgd(models[name]) for name in RCNNS}
    for name in RCNNS:
        models[name].train()
    calls = {name: (lambda n=name: train_step(models[n], optimizers[n], x)) for name in RCNNS}
    try:
        seconds = time_rounds(calls, args.warmup, args.repeats, args.device)
    finally:
        for name in RCNNS:
            models[name].eval()
            models[name].zero_grad(set_to_none=True)
    return {name: _row(seconds[name], seconds[BASELINE]) for name in RCNNS}


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
            "index_ms": lambda: instance_index_from_masks(masks, scores),
            "indexed_ms": lambda: compose_flow_indexed(depth, intrinsics, index, *motion,
                                                       *camera),
            "dense_ms": lambda: compose_flow(depth, intrinsics, dense, *motion, *camera),
        }
        row = {k: 1000 * v for k, v in time_rounds(calls, args.warmup, args.repeats,
                                                   device).items()}
        row["inference_path_ms"] = row["index_ms"] + row["indexed_ms"]
        row["inference_path_share"] = row["inference_path_ms"] / motion_ms
        row["dense_share"] = row["dense_ms"] / motion_ms
        out["instances"][str(num)] = row
    return out


def data_section(dicts, size, model, train_s, args):
    """Mapper throughput with 0 and 2 workers vs the training rate, and the data wait of a
    training loop fed by the 2-worker loader."""
    cfg = model_cfg(MOTION, args.depth, args.device)
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
            _sync(args.device)
            start = time.perf_counter()
            batch = next(batches)
            waits.append(time.perf_counter() - start)
            train_step(model, optimizer, batch[0])
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
        del batches
    out["data_wait_ms"] = 1000 * statistics.median(waits[1:])
    out["data_wait_share"] = out["data_wait_ms"] / (1000 * train_s)
    return out


# --------------------------------------------------------------------------- memory
def _status_mib(field):
    """VmRSS (current) or VmHWM (peak since exec or the last reset) in MiB, from /proc."""
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak_rss():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(spec):
    """Subprocess: peak memory (MiB) of one model's inference, then training, on one input.
    CUDA: torch.cuda.max_memory_allocated (reset between the phases). CPU: VmHWM - VmRSS
    before the model was built (VmHWM, unlike ru_maxrss, is not inherited from the parent),
    reset between the phases where /proc/self/clear_refs allows it."""
    torch.set_num_threads(spec["threads"])
    x = torch.load(spec["inputs"], weights_only=False)[spec["size"]]
    cuda = torch.device(spec["device"]).type == "cuda"
    baseline = 0.0 if cuda else _status_mib("VmRSS")
    reset = cuda or _reset_peak_rss()

    def peak():
        if cuda:
            return torch.cuda.max_memory_allocated() / 2 ** 20
        return _status_mib("VmHWM") - baseline

    model = build(spec["kind"], spec["depth"], spec["device"], spec["detections"])
    infer(model, x)
    result = {"inference_mib": peak(), "peak_reset": reset}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        result["peak_reset"] = _reset_peak_rss()
    model.train()
    train_step(model, sgd(model), x)
    result["training_mib"] = peak()
    print("MEMORY " + json.dumps(result))


def memory_section(inputs_path, args, threads):
    out = {"method": ("torch.cuda.max_memory_allocated (weights + activations)"
                      if torch.device(args.device).type == "cuda" else
                      "peak RSS (VmHWM) minus the RSS before the model was built, one fresh "
                      "subprocess per model, the peak reset between inference and training")}
    for size in args.sizes:
        row = {}
        for kind in RCNNS:
            spec = {"kind": kind, "depth": args.depth, "device": args.device, "size": _key(size),
                    "inputs": inputs_path, "threads": threads}
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-child",
                                   json.dumps(spec)], capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")]
            if proc.returncode != 0 or not lines:
                raise RuntimeError(f"memory probe of {kind} at {_key(size)} failed "
                                   f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            row[kind] = json.loads(lines[-1][len("MEMORY "):])
        for kind in RCNNS:
            for phase in ("inference", "training"):
                row[kind][f"{phase}_ratio"] = (row[kind][f"{phase}_mib"]
                                               / row[BASELINE][f"{phase}_mib"])
        out[_key(size)] = row
    return out


# ---------------------------------------------------------------------------- report
def goals(result):
    """The issue's goals: (goal, value, limit, met)."""
    out = []

    def add(goal, value, limit, higher_is_better=False):
        met = value >= limit if higher_is_better else value <= limit
        out.append({"goal": goal, "value": value, "limit": limit, "met": bool(met)})

    for section, limit in (("inference", GOALS["inference_ratio"]),
                           ("training", GOALS["training_ratio"])):
        for size, rows in result.get(section, {}).items():
            for name in RCNNS[1:]:
                add(f"{section} {name} / {BASELINE} at {size}", rows[name]["ratio"], limit)
    if "compose_flow" in result:
        row = result["compose_flow"]["instances"]["100"]
        add(f"compose_flow (index + indexed), 100 instances / {MOTION} inference at "
            f"{result['compose_flow']['size']}", row["inference_path_share"],
            GOALS["compose_flow_share"])
    if "data" in result:
        add("loader pairs/s (2 workers) / training iterations/s", result["data"]["ratio"]["2"],
            GOALS["loader_over_training"], higher_is_better=True)
    return out


def print_tables(result):
    fmt = "{:.3g}".format
    for section, unit in (("inference", "ms"), ("training", "s/iter")):
        rows = [[size, name, fmt(r["value"]), fmt(r["ratio"]), r.get("detections", "")]
                for size, by_name in result.get(section, {}).items()
                for name, r in by_name.items()]
        print(f"\n{section} ({unit}, median)\n" + tabulate(
            rows, headers=["size", "model", unit, f"/ {BASELINE}", "detections"]))
    for size, by_name in result.get("inference", {}).items():
        rows = [[name] + [fmt(r["stages_ms"].get(s, 0.0)) for s in STAGES + ("other",)]
                for name, r in by_name.items() if "stages_ms" in r]
        heads = [s.replace("roi_heads.", "") for s in STAGES + ("other",)]
        print(f"\ninference stages at {size} (ms, one run)\n" + tabulate(rows, ["model"] + heads))
    memory = result.get("memory", {})
    rows = [[size, name, fmt(r["inference_mib"]), fmt(r["inference_ratio"]),
             fmt(r["training_mib"]), fmt(r["training_ratio"])]
            for size, by_name in memory.items() if size != "method"
            for name, r in by_name.items()]
    if rows:
        print(f"\npeak memory (MiB): {memory['method']}\n" + tabulate(
            rows, ["size", "model", "inference", "ratio", "training", "ratio"]))
    if "compose_flow" in result:
        c = result["compose_flow"]
        rows = [[n, fmt(r["index_ms"]), fmt(r["indexed_ms"]), fmt(r["inference_path_share"]),
                 fmt(r["dense_ms"]), fmt(r["dense_share"])] for n, r in c["instances"].items()]
        print(f"\ncompose_flow at {c['size']} (ms; shares of {MOTION} inference "
              f"{fmt(c['motion_rcnn_inference_ms'])} ms)\n" + tabulate(
                  rows, ["instances", "index", "indexed", "share", "dense", "share"]))
    if "data" in result:
        d = result["data"]
        rows = [[w, fmt(p), fmt(d["ratio"][w])] for w, p in d["pairs_per_s"].items()]
        print(f"\ndata loading at {d['size']} (training {fmt(d['training_iters_per_s'])} it/s; "
              f"data wait with 2 workers {fmt(d['data_wait_ms'])} ms = "
              f"{fmt(100 * d['data_wait_share'])} % of an iteration)\n"
              + tabulate(rows, ["workers", "pairs/s", "/ training it/s"]))
    rows = [[g["goal"], fmt(g["value"]), g["limit"], "yes" if g["met"] else "NO"]
            for g in result["goals"]]
    print("\ngoals\n" + tabulate(rows, ["goal", "value", "limit", "met"]))


def write_json(path, data):
    """Write `data` to `path` atomically (temporary file in the same folder, then rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".benchmark-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


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
        "quick": args.quick, "batch_size": 1, "num_classes": 2, "score_thresh_test": 0.0,
        "detections_per_image": 100, "torch": torch.__version__,
        "models": {"mask_rcnn": "configs/Base-RCNN-FPN.yaml (3 channels)",
                   "motion_rcnn_6ch": "configs/Base-MotionRCNN-C6-FPN.yaml, XYZ_INPUT False",
                   "motion_rcnn_12ch": "configs/Base-MotionRCNN-C6-FPN.yaml, XYZ_INPUT True"},
    }}
    models = {kind: build(kind, args.depth, args.device)
              for kind in RCNNS + ("flownets", "sfmnet")}
    with tempfile.TemporaryDirectory(prefix="motion_rcnn_benchmark_") as tmp:
        dicts = make_world(os.path.join(tmp, "world"), args.sizes[0], args.world_frames)
        record = max(dicts, key=lambda d: len(d["annotations"]))
        inputs = {_key(size): pair_at(record, size) for size in args.sizes}
        result["settings"]["instances_per_pair"] = len(inputs[_key(args.sizes[0])]["instances"])
        result["inference"], result["training"] = {}, {}
        for size in args.sizes:
            x = inputs[_key(size)]
            result["inference"][_key(size)] = inference_section(models, x, args)
            result["training"][_key(size)] = training_section(models, x, args)
        first = _key(args.sizes[0])
        result["compose_flow"] = dict(size=first, **compose_section(
            inputs[first], result["inference"][first][MOTION]["value"], args))
        result["data"] = data_section(dicts, args.sizes[0], models[MOTION],
                                      result["training"][first][MOTION]["value"], args)
        if args.profile:
            profile_models(models, inputs[first])
        if not args.skip_memory:
            path = os.path.join(tmp, "inputs.pt")
            torch.save(inputs, path)
            del models
            result["memory"] = memory_section(path, args, threads)
    result["goals"] = goals(result)
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return None
    start = time.perf_counter()
    result = run(args)
    result["settings"]["wall_s"] = time.perf_counter() - start
    print_tables(result)
    write_json(args.output, result)
    print(f"\nwritten {args.output} ({result['settings']['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
