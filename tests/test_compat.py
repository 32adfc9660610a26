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
