import os

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

import motion_rcnn_d2  # noqa: E402,F401  (registers everything; installs compat)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
