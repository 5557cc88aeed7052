"""Suite-wide test settings."""
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
