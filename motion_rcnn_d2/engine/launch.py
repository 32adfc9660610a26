"""Multi-process training on GPUs (Detectron2's ``launch``) and on CPUs (gloo).

Detectron2's :func:`detectron2.engine.launch` initialises NCCL and binds one GPU per process;
it refuses to run without CUDA. :func:`launch` here hands GPU jobs to it unchanged
(``--num-gpus/--num-machines/--machine-rank/--dist-url`` keep their meaning) and runs CPU jobs
(``device`` "cpu", i.e. cfg.MODEL.DEVICE) itself: one process per ``num_processes_per_machine``
with the gloo backend, Detectron2's per-machine process group set up as its own launcher does,
and the machine's CPU threads shared between the processes.

The trainer's side of a CPU job (DistributedDataParallel without device ids) is
:func:`motion_rcnn_d2.compat.cpu_ddp_support`.
"""
import logging
import os
import socket
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

from ..compat import set_local_process_group

__all__ = ["launch", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = timedelta(minutes=30)


def _free_local_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(main_func, num_processes_per_machine, num_machines=1, machine_rank=0, dist_url=None,
           args=(), timeout=DEFAULT_TIMEOUT, device=None):
    """Run ``main_func(*args)`` in ``num_machines * num_processes_per_machine`` processes.

    Args:
        main_func, args: what every process runs.
        num_processes_per_machine: processes on this machine (train_net.py's ``--num-gpus``;
            on the CPU the machine's cores are split between them).
        num_machines, machine_rank: as Detectron2's launch (call it on every machine).
        dist_url: rendezvous URL, e.g. "tcp://10.0.0.1:29500" (machine 0's address) or
            "auto" (a free local port; one machine only).
        timeout: of the process group's collectives.
        device: cfg.MODEL.DEVICE; "cpu" runs gloo processes here, anything else (or None)
            goes to :func:`detectron2.engine.launch` (NCCL, one GPU per process).
    """
    if device is None or torch.device(device).type != "cpu":
        d2_launch(main_func, num_processes_per_machine, num_machines=num_machines,
                  machine_rank=machine_rank, dist_url=dist_url, args=args, timeout=timeout)
        return
    world_size = num_machines * num_processes_per_machine
    if world_size <= 1:
        main_func(*args)
        return
    if dist_url is None or dist_url == "auto":
        if num_machines != 1:
            raise ValueError(
                "--dist-url auto only works on one machine: pass machine 0's address, e.g. "
                "--dist-url tcp://10.0.0.1:29500, on every machine.")
        dist_url = f"tcp://127.0.0.1:{_free_local_port()}"
    mp.spawn(_cpu_worker, nprocs=num_processes_per_machine, daemon=False,
             args=(main_func, world_size, num_processes_per_machine, machine_rank, dist_url,
                   args, timeout))


def _cpu_worker(local_rank, main_func, world_size, num_processes_per_machine, machine_rank,
                dist_url, args, timeout):
    rank = machine_rank * num_processes_per_machine + local_rank
    try:
        dist.init_process_group(backend="gloo", init_method=dist_url, world_size=world_size,
                                rank=rank, timeout=timeout)
    except Exception:
        logging.getLogger(__name__).error("Process group URL: %s", dist_url)
        raise
    set_local_process_group(num_processes_per_machine)
    # the processes of one machine share its cores instead of each starting one thread per core
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // num_processes_per_machine))
    comm.synchronize()
    main_func(*args)
    # all ranks leave together: a rank tearing gloo down while a peer still talks aborts it
    dist.barrier()
    dist.destroy_process_group()

