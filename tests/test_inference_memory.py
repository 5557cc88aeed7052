"""keep_freed_memory: a freed large tensor's memory is reused without page faults (glibc)."""
import platform
import subprocess
import sys

import pytest

REUSE = """
import resource, sys, torch
from adapmtl.inference.memory import keep_freed_memory
print(keep_freed_memory() if sys.argv[1] == "keep" else "default")
def touch():
    tensor = torch.empty(16 * 2**20)  # 64 MiB: above the largest threshold glibc picks by itself
    tensor.fill_(1.0)
for _ in range(5):  # the heap reaches its high-water mark: a small allocation may first split a freed block
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    result = subprocess.run([sys.executable, "-c", REUSE, mode], capture_output=True, text=True, check=True)
    applied, faults = result.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(platform.system() != "Linux" or not platform.libc_ver()[0] == "glibc", reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    _, default = _faults("default")
    applied, kept = _faults("keep")
    assert applied == "True"
    if default < 1000:  # transparent huge pages: too few faults to tell apart
        pytest.skip(f"only {default} page faults without it on this machine")
    assert kept < default / 20, (kept, default)
