"""Build, cache and call the native sparse-convolution kernel (`kernels/sparse_conv2d.c`).

The kernel is plain C, compiled once per machine with the system's C compiler
(`$CC`, else cc / gcc / clang) and `-O3 -march=native`, then loaded with ctypes. Why
not a torch C++ extension: those need ninja and compile PyTorch's headers (a minute on
two cores); this file builds in about a second and needs nothing but a C compiler.

The shared library is cached under `$ADAPMTL_CACHE_DIR` (default `~/.cache/adapmtl`)
in `native/`, named by a hash of the source, the flags, the compiler and this CPU, so
an edited kernel, another compiler or another machine builds afresh. Without a
compiler (or with `ADAPMTL_NO_NATIVE=1`) `kernels()` returns None and callers fall
back to PyTorch; `status()` says why. `ADAPMTL_NATIVE_FLAGS` replaces the compiler
flags (say "-O3 -march=x86-64-v3" to build for other machines than this one).
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels") / "sparse_conv2d.c"
FLAG_SETS = (["-O3", "-march=native"], ["-O3"])  # the second for compilers without -march=native
_lock = threading.Lock()
_state: dict[str, object] = {}


def cache_dir() -> Path:
    """Where built kernels are kept."""
    root = os.environ.get("ADAPMTL_CACHE_DIR") or Path.home() / ".cache" / "adapmtl"
    return Path(root) / "native"


def find_compiler() -> str | None:
    """`$CC` if set, else the first of cc, gcc, clang on PATH."""
    if os.environ.get("CC"):
        return shutil.which(os.environ["CC"])
    return next((path for name in ("cc", "gcc", "clang") if (path := shutil.which(name))), None)


def _cpu_identity() -> str:
    """The CPU model and feature flags: a -march=native build is only valid on the same kind of CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({l for l in lines if l.startswith(("model name", "flags", "Features"))}))
    except OSError:
        return platform.processor() + platform.machine()


def build(compiler: str, flags: list[str], directory: Path) -> Path:
    """Compile the kernel with `flags` into `directory` (atomically) and return the library's path."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), " ".join(flags), version, _cpu_identity()]).encode())
    target = directory / f"sparse_conv2d-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:  # same filesystem: the rename is atomic
        built = Path(scratch) / target.name
        result = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(SOURCE)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} {' '.join(flags)} failed:\n{result.stderr.strip()}")
        os.replace(built, target)
    return target


def _load(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.adapmtl_sparse_conv2d_f32.argtypes = [pointer] * 7 + [size, size]
    library.adapmtl_sparse_conv2d_f32.restype = None
    library.adapmtl_simd_lanes.restype = ctypes.c_int
    return library


def kernels() -> ctypes.CDLL | None:
    """The loaded kernel library, built on first use; None where it cannot be built."""
    with _lock:
        if "library" in _state:
            return _state["library"]
        library, reason = None, ""
        compiler = find_compiler()
        if os.environ.get("ADAPMTL_NO_NATIVE"):
            reason = "disabled by ADAPMTL_NO_NATIVE"
        elif compiler is None:
            reason = "no C compiler found (set CC, or install gcc or clang)"
        else:
            errors = []
            custom = os.environ.get("ADAPMTL_NATIVE_FLAGS")
            for flags in [custom.split()] if custom else FLAG_SETS:
                try:
                    library = _load(build(compiler, flags, cache_dir()))
                    reason = f"built with {compiler} {' '.join(flags)}, {library.adapmtl_simd_lanes()} SIMD lanes"
                    break
                except (OSError, RuntimeError) as error:
                    errors.append(str(error))
            else:
                reason = "the kernel did not build: " + "\n".join(errors)
        _state.update(library=library, reason=reason)
        return library


def status() -> str:
    """Why the kernel is or is not available (builds it if not tried yet)."""
    kernels()
    return str(_state["reason"])


def _pool(workers: int) -> ThreadPoolExecutor:
    """A pool reused across calls; ctypes drops the GIL, so its threads run the kernel in parallel."""
    with _lock:
        if _state.get("pool_workers") != workers:
            if "pool" in _state:
                _state["pool"].shutdown(wait=False)
            _state["pool"] = ThreadPoolExecutor(workers, thread_name_prefix="adapmtl-sparse")
            _state["pool_workers"] = workers
        return _state["pool"]


def sparse_conv2d(x: torch.Tensor, out: torch.Tensor, tap_start: torch.Tensor, channels: torch.Tensor,
                  values: torch.Tensor, bias: torch.Tensor | None, geometry: torch.Tensor) -> None:
    """Fill `out` [B, O, Ho, Wo] with the sparse convolution of `x` [B, C, H, W] (float32, contiguous).

    The caller guarantees the shapes agree with `geometry` and that every channel index is
    below C (the kernel reads raw memory). Work is split over images and output channels
    on torch.get_num_threads() threads.
    """
    library = kernels()
    assert library is not None, "sparse_conv2d called without a native kernel"
    batch, out_channels = out.shape[:2]
    per_image, per_out = x[0].numel() * 4, out[0].numel() * 4
    threads = max(1, torch.get_num_threads())
    splits = max(1, -(-threads // batch)) if out_channels >= 2 * threads else 1
    bounds = [out_channels * i // splits for i in range(splits + 1)]
    jobs = [(x.data_ptr() + b * per_image, out.data_ptr() + b * per_out, bounds[i], bounds[i + 1])
            for b in range(batch) for i in range(splits)]
    common = (tap_start.data_ptr(), channels.data_ptr(), values.data_ptr(),
              bias.data_ptr() if bias is not None else None, geometry.data_ptr())

    def run(job):
        x_ptr, out_ptr, begin, end = job
        library.adapmtl_sparse_conv2d_f32(x_ptr, out_ptr, *common, begin, end)

    if threads == 1 or len(jobs) == 1:
        for job in jobs:
            run(job)
    else:
        list(_pool(min(threads, len(jobs))).map(run, jobs))
