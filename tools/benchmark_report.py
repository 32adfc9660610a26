"""The goals of the performance issue, the printed tables and the JSON file of
tools/benchmark.py (its result dict is documented there)."""
import json

from tabulate import tabulate

from motion_rcnn_d2.utils.files import open_atomically

__all__ = ["GOALS", "evaluate_goals", "print_tables", "write_json"]

BASELINE = "mask_rcnn"
MOTION_VARIANTS = ("motion_rcnn_6ch", "motion_rcnn_12ch")
# (limit, True when the value must be at least the limit)
GOALS = {
    "inference": (1.05, False),  # Motion R-CNN / Mask R-CNN inference ms, every size
    "training": (1.10, False),  # Motion R-CNN / Mask R-CNN training s/iteration, every size
    "memory": (1.15, False),  # Motion R-CNN / Mask R-CNN peak inference memory, every size
    "compose_flow": (0.05, False),  # flow composition, 100 instances / Motion R-CNN inference
    "data": (1.0, True),  # loader pairs/s with 2 workers / training iterations/s
}
STAGE_HEADS = ("backbone", "proposals", "box_pooler", "box_head", "box_predictor",
               "mask_pooler", "mask_head", "motion_head", "camera_head", "other")


def evaluate_goals(result):
    """List of {"goal", "value", "limit", "met"} for the sections present in `result`."""
    out = []

    def add(kind, goal, value):
        limit, at_least = GOALS[kind]
        met = value >= limit if at_least else value <= limit
        out.append({"goal": goal, "value": value, "limit": limit, "met": bool(met)})

    for section in ("inference", "training"):
        for size, rows in result.get(section, {}).items():
            for name in MOTION_VARIANTS:
                add(section, f"{section} {name} / {BASELINE} at {size}", rows[name]["ratio"])
    for size, rows in result.get("memory", {}).items():
        if size != "method":
            for name in MOTION_VARIANTS:
                add("memory", f"inference peak memory {name} / {BASELINE} at {size}",
                    rows[name]["inference_ratio"])
    if "compose_flow" in result:
        flow = result["compose_flow"]
        add("compose_flow", f"compose_flow inference path (index + indexed), 100 instances / "
            f"motion_rcnn_12ch inference at {flow['size']}",
            flow["instances"]["100"]["inference_path_share"])
    if "data" in result:
        add("data", "loader pairs/s (2 workers) / training iterations/s",
            result["data"]["ratio"]["2"])
    return out


def _fmt(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _table(title, rows, headers):
    if rows:
        print(f"\n{title}\n" + tabulate([[_fmt(v) for v in row] for row in rows], headers))


def print_tables(result):
    """Print every section of a benchmark result as tables."""
    for section, unit, rois in (("inference", "ms", ("proposals", "detections")),
                                ("training", "s/iter", ("fg_rois",))):
        rows = [[size, name, r["value"], r["ratio"]] + [r.get(k, "") for k in rois]
                for size, by_name in result.get(section, {}).items()
                for name, r in by_name.items()]
        _table(f"{section} ({unit}, median)", rows,
               ["size", "model", unit, f"/ {BASELINE}"] + list(rois))
    for size, by_name in result.get("inference", {}).items():
        rows = [[name] + [v for v in r["stages_ms"].values()]
                for name, r in by_name.items() if "stages_ms" in r]
        _table(f"inference stages at {size} (ms, medians)", rows, ("model",) + STAGE_HEADS)
    rows = [[size, name] + list(r["phases_s"].values())
            for size, by_name in result.get("training", {}).items()
            for name, r in by_name.items()]
    _table("training phases (s, medians)", rows,
           ["size", "model", "forward", "backward", "optimizer"])
    memory = result.get("memory", {})
    rows = [[size, name, r["inference_mib"], r["inference_ratio"], r["training_mib"],
             r["training_ratio"]]
            for size, by_name in memory.items() if size != "method"
            for name, r in by_name.items()]
    _table(f"peak memory (MiB): {memory.get('method')}", rows,
           ["size", "model", "inference", f"/ {BASELINE}", "training", f"/ {BASELINE}"])
    if "compose_flow" in result:
        flow = result["compose_flow"]
        rows = [[n, r["index_ms"], r["indexed_ms"], r["inference_path_share"], r["dense_ms"],
                 r["dense_share"]] for n, r in flow["instances"].items()]
        _table(f"compose_flow at {flow['size']} (ms; shares of motion_rcnn_12ch inference, "
               f"{_fmt(flow['motion_rcnn_inference_ms'])} ms)", rows,
               ["instances", "index", "indexed", "share", "dense", "share"])
    if "object_sweep" in result:
        sweep = result["object_sweep"]
        rows = [[n, r["ms"], r["share"]] for n, r in sweep["detections"].items()]
        _table(f"object sweep at {sweep['size']} (ms; shares of motion_rcnn_12ch inference, "
               f"{_fmt(sweep['motion_rcnn_inference_ms'])} ms)", rows,
               ["moving detections", "ms", "share"])
    if "data" in result:
        data = result["data"]
        rows = [[w, pps, data["ratio"][w]] for w, pps in data["pairs_per_s"].items()]
        _table(f"data loading at {data['size']} (training {_fmt(data['training_iters_per_s'])} "
               f"it/s; a training loop fed by 2 workers waits {_fmt(data['data_wait_ms'])} ms "
               f"= {_fmt(100 * data['data_wait_share'])} % of an iteration)", rows,
               ["workers", "pairs/s", "/ training it/s"])
    _table("goals", [[g["goal"], g["value"], g["limit"], "yes" if g["met"] else "NO"]
                     for g in result.get("goals", [])], ["goal", "value", "limit", "met"])


def write_json(path, data):
    """Write `data` to `path` atomically (`open_atomically`)."""
    with open_atomically(path, "w") as f:
        json.dump(data, f, indent=2)
