"""Small synthetic datasets written in the real NYU-v2 and Taskonomy formats, shared by the data tests."""
import pytest

from adapmtl.data import write_synthetic

SIZE = (24, 32)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory):
    # 8 scenes: 0-5 train (val carved from them), 6-7 test
    return write_synthetic(tmp_path_factory.mktemp("nyu"), "nyuv2", n=8, size=SIZE, seed=5, progress=False)


@pytest.fixture(scope="module")
def taskonomy_root(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("tk"), "taskonomy", n=6, size=SIZE, seed=6, buildings=3, progress=False)
