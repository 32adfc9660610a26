#!/usr/bin/env python
"""Peak memory of the benchmarked models, each in a fresh process (used by tools/benchmark.py).

    python tools/benchmark_memory.py '{"kind": "motion_rcnn_12ch", "depth": 50, "device": "cpu",
        "size": "1242x375", "inputs": "inputs.pt", "threads": 2, "detections": 100}'

prints one line "MEMORY {"inference_mib": ..., "training_mib": ..., "peak_reset": ...}": the
model is built, runs one inference, then one training iteration (SGD, lr 0) on the input
`inputs[size]` of the torch.save'd dict. CUDA: torch.cuda.max_memory_allocated (weights +
activations, reset between the phases). CPU: the peak resident set VmHWM minus the resident
set VmRSS before the model was built; VmHWM belongs to the process's own memory map, so unlike
ru_maxrss (which a child inherits from its parent at fork) it starts fresh at exec, and it is
reset between the phases through /proc/self/clear_refs ("peak_reset" False where the kernel
does not allow it: the training peak then also bounds the inference peak). `memory_section`
reports the median of several such processes per model.
"""
import json
import os
import statistics
import subprocess
import sys

__all__ = ["memory_section", "measure"]

PREFIX = "MEMORY "


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


def measure(spec):
    """Peak memory (MiB) of one model's inference, then training (module docstring)."""
    # run as a script (memory_section): its folder, tools/, is the first entry of sys.path
    import benchmark_models as models  # sets OMP_WAIT_POLICY before torch is imported
    import torch

    torch.set_num_threads(spec["threads"])
    x = torch.load(spec["inputs"], weights_only=False)[spec["size"]]
    cuda = models.is_cuda(spec["device"])
    baseline = 0.0 if cuda else _status_mib("VmRSS")
    reset = cuda or _reset_peak_rss()

    def peak():
        if cuda:
            return torch.cuda.max_memory_allocated() / 2 ** 20
        return _status_mib("VmHWM") - baseline

    model = models.build(spec["kind"], spec["depth"], spec["device"], spec["detections"])
    models.infer(model, x)
    result = {"inference_mib": peak()}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    else:
        reset = reset and _reset_peak_rss()
    model.train()
    models.train_step(model, models.sgd(model), x, spec["device"])
    result.update(training_mib=peak(), peak_reset=reset)
    return result


def _probe(specs):
    """One subprocess per spec, all at the same time (peaks do not depend on timing):
    {name: measure(spec)}."""
    procs = {name: subprocess.Popen([sys.executable, os.path.abspath(__file__), json.dumps(s)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, s in specs.items()}
    rows = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate()
        lines = [ln for ln in stdout.splitlines() if ln.startswith(PREFIX)]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"memory probe of {name} ({specs[name]['size']}) failed with exit "
                               f"code {proc.returncode}:\n{stderr[-3000:]}")
        rows[name] = json.loads(lines[-1][len(PREFIX):])
    return rows


def memory_section(specs, baseline, runs=1):
    """Peak memory of every spec, the median of `runs` fresh processes each.

    The CPU peak of one process varies between runs of the same model and input by up to a
    buffer of the mask head (~80 MiB at 1242x375: which of glibc's freed blocks the
    allocator reuses differs from process to process), hence the median of several.

    Args:
        specs: {model name: spec dict (module docstring)}.
        baseline: the name whose peaks the ratios divide by.
        runs: processes per spec (rounds of one process per spec at a time).
    Returns:
        {name: {"inference_mib", "training_mib" (medians), "inference_runs_mib",
        "training_runs_mib" (every run), "peak_reset" (every run's), "inference_ratio",
        "training_ratio"}}.
    """
    probes = [_probe(specs) for _ in range(runs)]
    rows = {}
    for name in specs:
        row = rows[name] = {"peak_reset": all(p[name]["peak_reset"] for p in probes)}
        for phase in ("inference", "training"):
            values = [p[name][f"{phase}_mib"] for p in probes]
            row[f"{phase}_mib"] = statistics.median(values)
            row[f"{phase}_runs_mib"] = values
    for row in rows.values():
        for phase in ("inference", "training"):
            row[f"{phase}_ratio"] = row[f"{phase}_mib"] / rows[baseline][f"{phase}_mib"]
    return rows


if __name__ == "__main__":
    print(PREFIX + json.dumps(measure(json.loads(sys.argv[1]))))
