"""Suite-wide test settings."""
import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Native kernels are built into a temporary folder, not the user's cache. Set at import, before
# any test module is collected: test modules ask for the kernel at import time (skip markers).
_KERNEL_CACHE = tempfile.mkdtemp(prefix="adapmtl-test-kernels-")
os.environ["ADAPMTL_CACHE_DIR"] = _KERNEL_CACHE
atexit.register(shutil.rmtree, _KERNEL_CACHE, True)


@pytest.fixture(autouse=True)
def one_thread():
    """The tests' tensors are tiny: one thread avoids thread start-up and contention
    costs that make them many times slower on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

