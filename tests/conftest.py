import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_net.py; before torch loads

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

import motion_rcnn_d2  # noqa: E402,F401  (registers everything; installs compat)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
