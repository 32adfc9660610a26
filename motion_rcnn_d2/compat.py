"""The one place that adapts to the installed Detectron2 build.

Detectron2 built from its repository ships the C++/CUDA extension ``detectron2._C``.
The PyPI source distribution ``pb1-detectron2==0.6`` lacks the C++ sources, so it
is built with ``ext_modules=[]`` and has no ``detectron2._C``. Several Detectron2
modules import ``_C`` at import time (deformable convolution, rotated boxes, the
fast COCO evaluator). :func:`install` puts a stand-in module in their way whose
every attribute access raises an error that names the operation and the fix.
Detectron2's current main branch calls its operations as ``torch.ops.detectron2.<op>``
(registered by ``_C``): without the extension the same stand-in answers there.
Nothing this plugin uses needs ``_C``: ROIAlign and NMS come from torchvision,
COCO AP from pycocotools' ``COCOeval``.

Pillow >= 10 removed ``Image.LINEAR`` (an alias of ``Image.BILINEAR``) which
Detectron2 0.6 uses as a default argument; it is restored.

On a full Detectron2 build and an old Pillow, :func:`install` changes nothing.

The engine's uses of Detectron2 internals live here too, each with the versions it is for
(checked against 0.6 and the main branch of 2026-06, commit 02b5c4e):

- :func:`set_local_process_group`: 0.6 has no ``comm.create_local_process_group``;
- :func:`add_optimizer_state` / :func:`load_optimizer_state`: 0.6's ``DefaultTrainer.state_dict``
  holds no optimizer state; later versions keep it under ``"_trainer"``;
- :func:`create_ddp_model` / :func:`cpu_ddp_support`: DistributedDataParallel for a model on
  the CPU (0.6 and main pass a CUDA device id);
- :func:`replace_checkpointer`: a trainer's own checkpointer (0.6 and main build theirs in
  ``DefaultTrainer.__init__``, with no builder method to override);
- :func:`tracing_adapter`: Detectron2's ``TracingAdapter`` (0.6's ``detectron2.export`` imports
  caffe2 on import, which no current torch ships).
"""
import contextlib
import importlib
import importlib.util
import sys
import types

__all__ = ["install", "HAS_D2_EXTENSION", "set_local_process_group", "add_optimizer_state",
           "load_optimizer_state", "create_ddp_model", "cpu_ddp_support", "replace_checkpointer",
           "tracing_adapter"]

HAS_D2_EXTENSION = True


_NOT_BUILT = "not built (Detectron2 without its C++ extension)"
# Build-information queries (detectron2.utils.collect_env asks them at start-up) answer;
# everything else is an operation and raises.
_BUILD_INFO = {
    "get_compiler_version": lambda: _NOT_BUILT,
    "get_cuda_version": lambda: _NOT_BUILT,
    "has_cuda": lambda: False,
}


class _MissingExtension(types.ModuleType):
    """Stand-in for ``detectron2._C`` (and ``torch.ops.detectron2``): build-info queries
    answer "not built"; any operation raises a clear ``RuntimeError``."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name in _BUILD_INFO:
            return _BUILD_INFO[name]
        raise RuntimeError(
            f"{self.__name__}.{name} is a C++/CUDA operation of Detectron2, but the "
            "installed Detectron2 was built without its C++ extension (the PyPI "
            "'pb1-detectron2' fallback). Install Detectron2 from its repository "
            "(pip install --no-build-isolation 'git+https://github.com/"
            "facebookresearch/detectron2.git') to use this operation."
        )


def install() -> None:
    """Make the installed Detectron2 importable and usable; idempotent."""
    global HAS_D2_EXTENSION
    from PIL import Image

    if not hasattr(Image, "LINEAR"):
        Image.LINEAR = Image.BILINEAR

    if "detectron2._C" in sys.modules:
        HAS_D2_EXTENSION = not isinstance(sys.modules["detectron2._C"], _MissingExtension)
        return
    import detectron2

    if importlib.util.find_spec("detectron2._C") is not None:
        try:
            importlib.import_module("detectron2._C")
            return
        except ImportError:  # an extension built for another torch: same stand-in
            pass
    HAS_D2_EXTENSION = False
    stand_in = _MissingExtension("detectron2._C")
    sys.modules["detectron2._C"] = stand_in
    detectron2._C = stand_in
    import torch

    # Detectron2 main: torch.ops.detectron2.<op> (no op of that namespace is registered here)
    torch.ops.detectron2 = _MissingExtension("torch.ops.detectron2")


def set_local_process_group(num_processes_per_machine):
    """Detectron2's group of the processes on this machine (``comm.get_local_rank/size``), in an
    initialised process group whose ranks are numbered machine by machine.

    Detectron2 after 0.6: ``comm.create_local_process_group``. 0.6: every process creates
    every machine's group, in the same order, and keeps its own as ``comm._LOCAL_PROCESS_GROUP``
    (what 0.6's own launcher does).
    """
    import torch.distributed as dist
    from detectron2.utils import comm

    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(num_processes_per_machine)
        return
    machine = dist.get_rank() // num_processes_per_machine
    for i in range(dist.get_world_size() // num_processes_per_machine):
        ranks = list(range(i * num_processes_per_machine, (i + 1) * num_processes_per_machine))
        group = dist.new_group(ranks)
        if i == machine:
            comm._LOCAL_PROCESS_GROUP = group


def add_optimizer_state(trainer_state, optimizer):
    """``DefaultTrainer.state_dict()`` with the optimizer's state: 0.6 saves none (it is added
    as "optimizer"); later versions already hold it under "_trainer". Returns the dict."""
    if "_trainer" not in trainer_state:
        trainer_state["optimizer"] = optimizer.state_dict()
    return trainer_state


def load_optimizer_state(trainer_state, optimizer):
    """Restore what :func:`add_optimizer_state` added (later versions restore their own)."""
    if "optimizer" in trainer_state:
        optimizer.load_state_dict(trainer_state["optimizer"])


def create_ddp_model(model, **kwargs):
    """:func:`detectron2.engine.create_ddp_model`, also for a model on the CPU.

    Detectron2 0.6 and main pass ``device_ids=[local rank]`` unless told otherwise, which
    DistributedDataParallel rejects for a module on the CPU ("device_ids ... only work with
    ... GPU modules"). With more than one process and the model's parameters on the CPU,
    ``device_ids`` defaults to None here; a GPU model or a single process is handed to
    Detectron2's function unchanged. kwargs: as DistributedDataParallel's.
    """
    import detectron2.engine
    from detectron2.utils import comm

    if comm.get_world_size() > 1:
        params = list(model.parameters())
        if params and params[0].device.type == "cpu":
            kwargs.setdefault("device_ids", None)
    # the package's name, not detectron2.engine.defaults.create_ddp_model (which
    # cpu_ddp_support replaces by this function)
    return detectron2.engine.create_ddp_model(model, **kwargs)


@contextlib.contextmanager
def cpu_ddp_support():
    """Within the block, ``DefaultTrainer.__init__`` wraps its model with :func:`create_ddp_model`.

    Detectron2 0.6 and main: ``DefaultTrainer.__init__`` calls the module global
    ``detectron2.engine.defaults.create_ddp_model(model, broadcast_buffers=False)``; wrap a
    trainer's ``super().__init__(cfg)`` in this block to train a CPU model in several processes.
    GPU models are wrapped as before; outside the block nothing changes.
    """
    from detectron2.engine import defaults

    original = defaults.create_ddp_model
    defaults.create_ddp_model = create_ddp_model
    try:
        yield
    finally:
        defaults.create_ddp_model = original


def replace_checkpointer(trainer, build, **checkpointables):
    """Give a ``DefaultTrainer`` the checkpointer ``build(model, save_dir, **checkpointables)``.

    Detectron2 0.6 and main make ``DetectionCheckpointer(model, cfg.OUTPUT_DIR,
    trainer=weakref.proxy(trainer))`` in ``DefaultTrainer.__init__`` and offer no builder to
    override; ``build_hooks`` (its ``PeriodicCheckpointer``) and ``resume_or_load`` then use
    ``trainer.checkpointer``. Call this in ``build_hooks`` before ``super().build_hooks()``:
    the first method ``__init__`` calls after making it. The new checkpointer gets the old one's
    model (fvcore has unwrapped DistributedDataParallel), directory and checkpointables, plus
    ``checkpointables``. Returns it.
    """
    old = trainer.checkpointer
    trainer.checkpointer = build(old.model, old.save_dir, **old.checkpointables,
                                 **checkpointables)
    return trainer.checkpointer


def tracing_adapter():
    """Detectron2's ``detectron2.export.TracingAdapter`` class.

    0.6's ``detectron2/export/__init__.py`` imports its caffe2 exporter first, which fails
    without caffe2 (gone from PyTorch since 2.0); ``TracingAdapter`` itself (``flatten.py``)
    needs none of it. Then ``detectron2.export`` is registered as a bare package over the same
    folder, without running its ``__init__``, and ``flatten`` is imported from it.
    """
    try:
        from detectron2.export import TracingAdapter
        return TracingAdapter
    except ImportError as error:
        if "caffe2" not in str(error):
            raise
    import detectron2

    spec = importlib.util.find_spec("detectron2.export")
    package = types.ModuleType("detectron2.export")
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = "detectron2.export"
    sys.modules["detectron2.export"] = package
    detectron2.export = package
    package.TracingAdapter = importlib.import_module("detectron2.export.flatten").TracingAdapter
    return package.TracingAdapter
