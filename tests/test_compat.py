import sys

import pytest
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


def test_local_process_group_on_this_detectron2_version(tmp_path):
    """In a fresh process (Detectron2 keeps the group in a module global): 2 gloo processes on
    one machine see local size 2 and their own local rank."""
    import subprocess

    script = (
        "import os, socket, torch.distributed as dist, torch.multiprocessing as mp\n"
        "import motion_rcnn_d2\n"
        "from detectron2.utils import comm\n"
        "from motion_rcnn_d2.compat import set_local_process_group\n"
        "def work(rank, url):\n"
        "    dist.init_process_group('gloo', init_method=url, world_size=2, rank=rank)\n"
        "    set_local_process_group(2)\n"
        "    assert (comm.get_local_size(), comm.get_local_rank()) == (2, rank)\n"
        "    dist.barrier(); dist.destroy_process_group()\n"
        "if __name__ == '__main__':\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()\n"
        "    mp.spawn(work, nprocs=2, args=(f'tcp://127.0.0.1:{port}',))\n"
        "    print('ok')\n"
    )
    path = tmp_path / "local_group.py"
    path.write_text(script)
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
