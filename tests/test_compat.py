import sys

import pytest
import torch
from PIL import Image

from motion_rcnn_d2 import compat


def test_pillow_linear_alias():
    assert Image.LINEAR == Image.BILINEAR


def test_detectron2_imports_with_or_without_extension():
    from detectron2.engine import DefaultPredictor, DefaultTrainer, launch  # noqa: F401
    from detectron2.evaluation import COCOEvaluator  # noqa: F401
    from detectron2.modeling import build_model  # noqa: F401

    assert "detectron2._C" in sys.modules


def test_stand_in_names_the_operation_and_the_fix():
    c = sys.modules["detectron2._C"]
    if compat.HAS_D2_EXTENSION:
        pytest.skip("full Detectron2 build: the real extension is loaded")
    with pytest.raises(RuntimeError, match="box_iou_rotated.*without its C\\+\\+ extension"):
        c.box_iou_rotated
    with pytest.raises(AttributeError):
        c.__wrapped__  # dunder look-ups (inspect, pickle) get a plain AttributeError


def test_environment_report_works():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "detectron2" in info
    if not compat.HAS_D2_EXTENSION:
        assert "without its C++ extension" in info


def test_install_is_idempotent():
    before = sys.modules["detectron2._C"]
    compat.install()
    compat.install()
    assert sys.modules["detectron2._C"] is before


def test_rotated_box_op_fails_clearly_on_the_pure_python_build():
    if compat.HAS_D2_EXTENSION:
        pytest.skip("full Detectron2 build")
    import torch
    from detectron2.layers.rotated_boxes import pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 4.0, 4.0, 0.0]])
    with pytest.raises(RuntimeError, match="box_iou_rotated"):
        pairwise_iou_rotated(boxes, boxes)


def test_optimizer_state_is_added_only_where_detectron2_leaves_it_out():
    import torch

    param = torch.nn.Parameter(torch.ones(2))
    optimizer = torch.optim.SGD([param], lr=0.5, momentum=0.9)
    param.grad = torch.ones(2)
    optimizer.step()
    old = compat.add_optimizer_state({"iteration": 3}, optimizer)  # Detectron2 0.6
    assert old["optimizer"] == optimizer.state_dict()
    new = {"iteration": 3, "_trainer": {"optimizer": "kept"}}  # later versions
    assert compat.add_optimizer_state(dict(new), optimizer) == new
    fresh = torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=0.9)
    compat.load_optimizer_state(old, fresh)
    assert fresh.param_groups[0]["lr"] == 0.5
    assert torch.equal(fresh.state_dict()["state"][0]["momentum_buffer"], torch.ones(2))
    compat.load_optimizer_state(new, fresh)  # nothing of ours to restore
    assert fresh.param_groups[0]["lr"] == 0.5


def _run_in_two_gloo_processes(tmp_path, body):
    """Run ``work(rank)``'s ``body`` (source lines, 4 spaces in) in 2 fresh gloo processes
    (Detectron2 keeps its process groups in module globals); assert both finish."""
    import subprocess

    script = (
        "import torch, torch.distributed as dist, torch.multiprocessing as mp\n"
        "import motion_rcnn_d2\n"
        "from detectron2.utils import comm\n"
        "from motion_rcnn_d2 import compat\n"
        "def work(rank, url):\n"
        "    dist.init_process_group('gloo', init_method=url, world_size=2, rank=rank)\n"
        f"{body}"
        "    dist.barrier(); dist.destroy_process_group()\n"
        "if __name__ == '__main__':\n"
        "    import socket\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "    mp.spawn(work, nprocs=2, args=(f'tcp://127.0.0.1:{port}',))\n"
        "    print('ok')\n"
    )
    path = tmp_path / "two_processes.py"
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]


def test_local_process_group_on_this_detectron2_version(tmp_path):
    """2 gloo processes on one machine see local size 2 and their own local rank."""
    _run_in_two_gloo_processes(tmp_path, (
        "    compat.set_local_process_group(2)\n"
        "    assert (comm.get_local_size(), comm.get_local_rank()) == (2, rank)\n"))


def test_cpu_model_wrapped_for_ddp_on_this_detectron2_version(tmp_path):
    """In 2 gloo processes: Detectron2's own create_ddp_model rejects a CPU model (it passes a
    CUDA device id; if this ever stops failing, cpu_ddp_support is no longer needed for this
    version); inside cpu_ddp_support DefaultTrainer's name gives a working
    DistributedDataParallel; afterwards Detectron2's function is back."""
    _run_in_two_gloo_processes(tmp_path, (
        "    compat.set_local_process_group(2)\n"
        "    from detectron2.engine import defaults\n"
        "    from torch.nn.parallel import DistributedDataParallel\n"
        "    d2_create = defaults.create_ddp_model\n"
        "    model = torch.nn.Linear(2, 1)\n"
        "    try:\n"
        "        d2_create(model, broadcast_buffers=False)\n"
        "        raise AssertionError('Detectron2 wraps CPU models itself now')\n"
        "    except ValueError as error:\n"
        "        assert 'device_ids' in str(error), error\n"
        "    with compat.cpu_ddp_support():\n"
        "        ddp = defaults.create_ddp_model(model, broadcast_buffers=False)\n"
        "    assert defaults.create_ddp_model is d2_create\n"
        "    assert isinstance(ddp, DistributedDataParallel) and ddp.device_ids is None\n"
        "    torch.manual_seed(rank)\n"
        "    ddp(torch.randn(3, 2)).sum().backward()  # gradients averaged over the 2 ranks\n"
        "    grad = model.weight.grad.clone(); dist.broadcast(grad, src=0)\n"
        "    assert torch.equal(grad, model.weight.grad)\n"))


class _TinyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 1)

    def forward(self, batch):
        return {"loss": self.linear(batch).square().sum()}


def test_replace_checkpointer_on_this_detectron2_version(tmp_path):
    """A DefaultTrainer whose build_hooks replaces its checkpointer: the hooks and
    resume_or_load use the new one, which keeps the trainer and gets the extra checkpointable."""
    import itertools

    from detectron2.config import get_cfg
    from detectron2.engine import DefaultTrainer, hooks

    from motion_rcnn_d2.engine import MotionCheckpointer

    class Counter:
        def __init__(self):
            self.count = 0

        def state_dict(self):
            return {"count": self.count}

        def load_state_dict(self, state):
            self.count = state["count"]

    class Trainer(DefaultTrainer):
        build_model = classmethod(lambda cls, cfg: _TinyModel())
        build_train_loader = classmethod(lambda cls, cfg: itertools.repeat(torch.ones(1, 2)))

        def build_hooks(self):
            self.counter = Counter()
            compat.replace_checkpointer(self, MotionCheckpointer, counter=self.counter)
            return super().build_hooks()

    cfg = get_cfg()
    cfg.OUTPUT_DIR = str(tmp_path)
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.BASE_LR = 3, 2, 0.01
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.STEPS = 0, ()
    trainer = Trainer(cfg)
    checkpointer = trainer.checkpointer
    assert type(checkpointer) is MotionCheckpointer
    assert checkpointer.model is trainer.model and checkpointer.save_dir == str(tmp_path)
    assert set(checkpointer.checkpointables) == {"trainer", "counter"}
    periodic = [h for h in trainer._hooks if isinstance(h, hooks.PeriodicCheckpointer)]
    assert len(periodic) == 1 and periodic[0].checkpointer is checkpointer
    trainer.counter.count = 7
    trainer.train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000001.pth",
                                                             "model_final.pth"]
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert saved["trainer"]["iteration"] == 2 and saved["counter"] == {"count": 7}
    resumed = Trainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == 3 and resumed.counter.count == 7
    assert torch.equal(resumed.model.linear.weight, trainer.model.linear.weight)
