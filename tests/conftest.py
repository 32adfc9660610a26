import os
import shutil

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see train_net.py; before torch loads

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))

import motion_rcnn_d2  # noqa: E402,F401  (registers everything; installs compat)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request):
    """A folder shared by one module's tests (a generated world, trained runs, checkpoints),
    removed when the module ends, so the suite holds at most one module's files on disk."""
    path = tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])
    yield path
    shutil.rmtree(path, ignore_errors=True)
