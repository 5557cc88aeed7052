"""Suite-wide test settings."""
import os

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """The tests' tensors are tiny: one thread avoids thread start-up and contention
    costs that make them many times slower on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def private_kernel_cache(tmp_path_factory):
    """Native kernels are built into the session's temporary folder, not the user's cache."""
    previous = os.environ.get("ADAPMTL_CACHE_DIR")
    os.environ["ADAPMTL_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if previous is None:
        del os.environ["ADAPMTL_CACHE_DIR"]
    else:
        os.environ["ADAPMTL_CACHE_DIR"] = previous
