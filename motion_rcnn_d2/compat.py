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

Two differences between Detectron2 versions that the engine meets are bridged here too:
:func:`set_local_process_group` (0.6 has no ``comm.create_local_process_group``) and
:func:`add_optimizer_state` / :func:`load_optimizer_state` (0.6's ``DefaultTrainer.state_dict``
holds no optimizer state; later versions keep it under ``"_trainer"``), and
:func:`tracing_adapter` (0.6's ``detectron2.export`` imports caffe2 on import, which no current
torch ships).
"""
import importlib
import importlib.util
import sys
import types

__all__ = ["install", "HAS_D2_EXTENSION", "set_local_process_group", "add_optimizer_state",
           "load_optimizer_state", "tracing_adapter"]

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
