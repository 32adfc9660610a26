#!/usr/bin/env python
"""Pictures of learning: one PNG of a training run's loss terms and motion metrics against the
iteration, from the run's ``metrics.json``.

    python tools/plot_training.py output/synthetic_cpu \
        --zero-motion-datasets synthetic_val synthetic_test
    python tools/plot_training.py output/synthetic_cpu/metrics.json --output curves.png \
        --zero-motion synthetic_val=output/zero_motion/synthetic_val/motion_metrics.json

The first argument is the run's ``metrics.json`` (the JSON lines of Detectron2's JSONWriter) or
the ``OUTPUT_DIR`` holding it. The PNG (default ``training_curves.png`` beside it) has:

- the loss terms (``loss_*`` and ``total_loss``, Detectron2's median over its 20-iteration
  window) on a log scale: Detectron2's detection terms (``loss_rpn_*``, ``loss_cls``,
  ``loss_box_reg``, ``loss_mask``) dashed, the motion, camera and flow terms solid, the total
  black; a term's values <= 0 are left out (no logarithm);
- one panel per metric, E_R (deg), E_t (m), E_R^cam (deg), E_t^cam (m), AEE (px) and box AP,
  with one line per evaluated data set. These exist only for a run with periodic evaluation,
  ``TEST.EVAL_PERIOD`` > 0 (plus the evaluation at the end of training): Detectron2 logs the
  results as ``<data set>/motion/E_t``, ``<data set>/bbox/AP``, or, when DATASETS.TEST has one
  data set, without its name (``motion/E_t``); such a set is named after the DATASETS.TEST of
  the run's ``config.yaml`` (or ``--dataset-name``). A metric that is never logged loses its
  panel, with a warning;
- each data set's zero-motion level (every GT object detected with identity motion, identity
  camera, zero flow: the model has learned a motion where its line is below this) as a
  dashed horizontal line in the data set's colour; box AP has no zero level. Either
  ``--zero-motion-datasets NAME ...`` computes them now with tools/zero_motion_baseline.py's
  `zero_motion_metrics` and the run's ``config.yaml`` (or ``--config-file``; data sets of
  ``--register NAME=ROOT`` as in train_net.py; same ``$MOTION_RCNN_DATASETS`` as the run), or
  ``--zero-motion NAME=PATH`` (repeatable) reads them from the ``motion_metrics.json`` (or its
  folder) that ``tools/zero_motion_baseline.py --dataset NAME --output FOLDER`` wrote.

The figure is 1200 px wide and 320 px high per row of panels (the losses, then three metrics
per row); it is written atomically. An iteration logged twice (a run resumed from an earlier
checkpoint) keeps its last value; a last line without its newline (a run still writing) is
skipped with a warning.

Errors: FileNotFoundError for a missing metrics.json, zero-motion file or config; ValueError
naming the file, line and key for a malformed file, for a zero-motion data set the run never
evaluated (checked before any computing), and when the file holds neither loss terms nor
evaluation results.
"""
import argparse
import json
import logging
import math
import os
import re
from collections import OrderedDict, defaultdict, namedtuple

import matplotlib
import yaml
from matplotlib.figure import Figure

from motion_rcnn_d2.data import register_from_arguments
from motion_rcnn_d2.evaluation.motion_evaluator import RESULTS_FILE as ZERO_MOTION_FILE
from motion_rcnn_d2.utils.files import write_atomically

__all__ = ["METRICS", "Series", "TrainingCurves", "read_metrics", "read_zero_motion",
           "zero_motion_levels", "computed_zero_motion", "plot_training"]

logger = logging.getLogger("plot_training")

METRICS_FILE = "metrics.json"
DEFAULT_OUTPUT = "training_curves.png"
DEFAULT_DATASET_NAME = "test"
TOTAL_LOSS = "total_loss"
DETECTION_LOSSES = ("loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg", "loss_mask")
# metric: (evaluator's task, its key, panel title)
METRICS = OrderedDict([
    ("E_R", ("motion", "E_R", "object rotation E_R (deg)")),
    ("E_t", ("motion", "E_t", "object translation E_t (m)")),
    ("E_R_cam", ("motion", "E_R_cam", "camera rotation E_R^cam (deg)")),
    ("E_t_cam", ("motion", "E_t_cam", "camera translation E_t^cam (m)")),
    ("AEE", ("motion", "AEE", "optical flow AEE (px)")),
    ("AP", ("bbox", "AP", "box AP")),
])
_METRIC_OF_KEY = {(task, key): metric for metric, (task, key, _) in METRICS.items()}
_EVAL_KEY = re.compile(r"^(?:(?P<dataset>[^/]+)/)?(?P<task>[^/]+)/(?P<key>[^/]+)$")
COLUMNS = 3
WIDTH_IN, ROW_HEIGHT_IN, DPI = 12.0, 3.2, 100

Series = namedtuple("Series", ["iterations", "values"])
TrainingCurves = namedtuple("TrainingCurves", ["losses", "metrics"])
TrainingCurves.__doc__ = """losses: {loss name: Series}; metrics: {metric of METRICS: {data set:
Series}}; Series: ascending iterations (int) and their values (float, nan kept)."""


def metrics_path(run):
    """The metrics.json of `run` (the file itself or the folder holding it)."""
    path = os.path.join(run, METRICS_FILE) if os.path.isdir(run) else run
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: no such file. Give the metrics.json of a train_net.py run (Detectron2 "
            "writes it into OUTPUT_DIR) or that folder.")
    return path


def single_test_set_name(folder):
    """DATASETS.TEST[0] of ``folder/config.yaml`` (written by Detectron2's default_setup) when
    it names exactly one data set, else None."""
    try:
        with open(os.path.join(folder, "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        tests = cfg["DATASETS"]["TEST"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return tests[0] if isinstance(tests, list) and len(tests) == 1 else None


def read_metrics(path, dataset_name=DEFAULT_DATASET_NAME):
    """The loss and metric series of a metrics.json (see the module's docstring).

    Args:
        path: the metrics.json file.
        dataset_name: name of the data set whose results are logged without one (a run whose
            DATASETS.TEST has one data set).
    Returns:
        `TrainingCurves`.
    """
    losses = defaultdict(dict)
    metrics = defaultdict(lambda: defaultdict(dict))
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # the last line, not yet complete
                logger.warning(f"{path}, line {number}: incomplete last line skipped (a run "
                               "still writing?)")
                continue
            raise ValueError(f"{path}, line {number}: not JSON ({error.msg}). Each line must be "
                             "one JSON object, as Detectron2's JSONWriter writes.") from None
        iteration = row.get("iteration") if isinstance(row, dict) else None
        if not isinstance(iteration, int) or isinstance(iteration, bool):
            raise ValueError(f"{path}, line {number}: expected a JSON object with an integer "
                             f"'iteration', as Detectron2's JSONWriter writes; got {line[:80]!r}")
        for key, value in row.items():
            match = _EVAL_KEY.match(key)
            if key == TOTAL_LOSS or key.startswith("loss_"):
                points = losses[key]
            elif match and (match["task"], match["key"]) in _METRIC_OF_KEY:
                metric = _METRIC_OF_KEY[match["task"], match["key"]]
                points = metrics[metric][match["dataset"] or dataset_name]
            else:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{path}, line {number}: '{key}' is {value!r}, not a number.")
            points[iteration] = float(value)
    return TrainingCurves(
        {name: _series(points) for name, points in losses.items()},
        {metric: {ds: _series(points) for ds, points in by_set.items()}
         for metric, by_set in metrics.items()})


def _series(points):
    iterations = sorted(points)
    return Series(iterations, [points[i] for i in iterations])


def read_zero_motion(path):
    """{metric: level} of the motion metrics of METRICS from a motion_metrics.json (or its
    folder), as tools/zero_motion_baseline.py --output writes it; null (nothing measured) is
    nan."""
    if os.path.isdir(path):
        path = os.path.join(path, ZERO_MOTION_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"--zero-motion: {path}: no such file. Write it with python "
            "tools/zero_motion_baseline.py --config-file CFG --dataset NAME --output FOLDER.")
    try:
        with open(path) as f:
            motion = json.load(f)["motion"]
        motion.items()
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
        raise ValueError(f"--zero-motion: {path} is not a JSON object with a 'motion' object, "
                         "as MotionEvaluator writes into motion_metrics.json.") from None
    return zero_motion_levels(motion, f"--zero-motion: {path}")


def zero_motion_levels(motion, source):
    """{metric: level} of the motion metrics of METRICS in MotionEvaluator's ``motion`` results
    (None or nan: nothing measured, no line); `source` names them in errors."""
    levels = {}
    for metric, (task, key, _) in METRICS.items():
        if task != "motion":
            continue
        if key not in motion:
            raise ValueError(f"{source}: 'motion' has no key '{key}'.")
        value = motion[key]
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"{source}: 'motion' key '{key}' is {value!r}, not a number (or "
                             "null).")
        levels[metric] = math.nan if value is None else float(value)
    return levels


def computed_zero_motion(names, config_file, opts=()):
    """{data set: {metric: level}} of the registered data sets `names`, computed now by
    tools/zero_motion_baseline.py's `zero_motion_metrics` with the config `config_file`."""
    from zero_motion_baseline import zero_motion_config, zero_motion_metrics  # tools/, beside us

    cfg = zero_motion_config(config_file, opts)
    return {name: zero_motion_levels(zero_motion_metrics(cfg, name)["motion"],
                                     f"zero motion of '{name}'") for name in names}


def check_datasets(curves, names, source=METRICS_FILE):
    """Raise ValueError for a name of `names` that is not a data set evaluated in `curves`."""
    datasets = sorted({ds for by_set in curves.metrics.values() for ds in by_set})
    for name in names:
        if name not in datasets:
            raise ValueError(
                f"--zero-motion {name}: {source} has no evaluation results of a data set of that "
                f"name (it has: {', '.join(datasets) or 'none'}). A run with one test set logs its "
                "results without the name: name it with --dataset-name.")


def _panels(curves, source):
    panels = ["loss"] if curves.losses else []
    if not curves.losses:
        logger.warning(f"{source}: no loss terms logged: the loss panel is left out.")
    for metric, (task, key, _) in METRICS.items():
        if curves.metrics.get(metric):
            panels.append(metric)
        else:
            logger.warning(
                f"{source}: '{task}/{key}' (or '<data set>/{task}/{key}') is never logged: its "
                "panel is left out. Evaluation results are logged only by a run with "
                "TEST.EVAL_PERIOD > 0 or at its end.")
    if not panels:
        raise ValueError(f"{source}: neither loss terms ('loss_*', 'total_loss') nor evaluation "
                         "results to plot; is it the metrics.json of a training run?")
    return panels


def plot_training(curves, output, zero_motion=None, source=METRICS_FILE):
    """Draw `curves` (`read_metrics`) with the zero-motion levels into the PNG `output`.

    Args:
        zero_motion: {data set: {metric: level}} (`read_zero_motion`); every data set must be
            one of the curves'.
        source: the metrics.json, for the title and messages.
    Returns:
        the panels drawn: "loss" and metrics of METRICS, in order.
    """
    zero_motion = zero_motion or {}
    check_datasets(curves, zero_motion, source)
    datasets = sorted({ds for by_set in curves.metrics.values() for ds in by_set})
    panels = _panels(curves, source)
    metric_rows = math.ceil(sum(p != "loss" for p in panels) / COLUMNS)
    rows = metric_rows + (panels[0] == "loss")
    fig = Figure(figsize=(WIDTH_IN, ROW_HEIGHT_IN * rows), dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(rows, COLUMNS)
    fig.suptitle(source, fontsize=9)
    colors = {ds: f"C{i % 10}" for i, ds in enumerate(datasets)}
    slot = 0
    for panel in panels:
        if panel == "loss":
            _draw_losses(fig.add_subplot(grid[0, :]), curves.losses)
            slot = COLUMNS
            continue
        ax = fig.add_subplot(grid[slot // COLUMNS, slot % COLUMNS])
        slot += 1
        for ds, series in sorted(curves.metrics[panel].items()):
            ax.plot(series.iterations, series.values, marker="o", markersize=3,
                    color=colors[ds], label=ds)
            level = zero_motion.get(ds, {}).get(panel, math.nan)
            if math.isfinite(level):
                ax.axhline(level, color=colors[ds], linestyle="--", linewidth=1,
                           label=f"{ds}: zero motion")
        ax.set_title(METRICS[panel][2], fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    write_atomically(output, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    return panels


def _draw_losses(ax, losses):
    names = sorted(losses, key=lambda n: (n == TOTAL_LOSS, n in DETECTION_LOSSES, n))
    ours = 0
    for name in names:
        series = losses[name]
        values = [v if v > 0 else math.nan for v in series.values]
        if name == TOTAL_LOSS:
            style = dict(color="black", linewidth=2)
        elif name in DETECTION_LOSSES:  # colours of their own (tab20b's dark ones), dashed
            style = dict(linestyle="--", linewidth=1,
                         color=matplotlib.colormaps["tab20b"](4 * DETECTION_LOSSES.index(name)))
        else:
            style = dict(linewidth=1.5, color=f"C{ours % 10}")
            ours += 1
        ax.plot(series.iterations, values, label=name, **style)
    ax.set_yscale("log")
    ax.set_title("loss terms (solid: motion, camera, flow; dashed: detection)", fontsize=10)
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))


def parse_zero_motion_arguments(arguments):
    """{data set: {metric: level}} of ``--zero-motion NAME=PATH`` arguments."""
    levels = {}
    for argument in arguments:
        name, sep, path = argument.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--zero-motion {argument!r}: expected NAME=PATH, e.g. "
                             "synthetic_val=output/zero_motion/synthetic_val/motion_metrics.json")
        levels[name] = read_zero_motion(path)
    return levels


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="metrics.json of a train_net.py run, or its OUTPUT_DIR")
    p.add_argument("--output", default=None, help=f"PNG to write (default: {DEFAULT_OUTPUT} "
                   "beside metrics.json)")
    p.add_argument("--zero-motion", action="append", default=[], metavar="NAME=PATH",
                   help="a data set's zero-motion level: the motion_metrics.json (or its folder) "
                        "of tools/zero_motion_baseline.py --output; repeatable")
    p.add_argument("--zero-motion-datasets", nargs="+", default=[], metavar="NAME",
                   help="compute these data sets' zero-motion levels now (as "
                        "tools/zero_motion_baseline.py) with --config-file")
    p.add_argument("--config-file", default=None,
                   help="config for --zero-motion-datasets (default: the run's config.yaml)")
    p.add_argument("--register", action="append", default=[], metavar="NAME=ROOT",
                   help="register a data set in the Virtual KITTI 2 layout (as train_net.py)")
    p.add_argument("--dataset-name", default=None,
                   help="name of the one data set of a run with one DATASETS.TEST (default: the "
                        f"run's config.yaml, else '{DEFAULT_DATASET_NAME}')")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    path = metrics_path(args.run)
    folder = os.path.dirname(path)
    name = args.dataset_name or single_test_set_name(folder) or DEFAULT_DATASET_NAME
    output = args.output or os.path.join(folder, DEFAULT_OUTPUT)
    curves = read_metrics(path, name)
    zero_motion = parse_zero_motion_arguments(args.zero_motion)
    if args.zero_motion_datasets:
        check_datasets(curves, args.zero_motion_datasets, path)  # before the work
        register_from_arguments(args.register)
        config_file = args.config_file or os.path.join(folder, "config.yaml")
        if not os.path.isfile(config_file):
            raise FileNotFoundError(f"--zero-motion-datasets: no config '{config_file}'; give "
                                    "the run's config with --config-file.")
        zero_motion.update(computed_zero_motion(args.zero_motion_datasets, config_file))
    panels = plot_training(curves, output, zero_motion, source=path)
    logger.info(f"{output}: {', '.join(panels)}")
    return output


if __name__ == "__main__":
    main()
