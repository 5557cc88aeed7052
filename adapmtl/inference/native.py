"""Build, cache and call the native sparse kernels: the convolution (`kernels/sparse_conv2d.c`)
and the Linear layer on tokens (`kernels/sparse_linear.c`), one shared library each.

A kernel is plain C, compiled once per machine with the system's C compiler
(`$CC`, else cc / gcc / clang) and `-O3 -march=native -fopenmp`, then loaded with ctypes. Why
not a torch C++ extension: those need ninja and compile PyTorch's headers (a minute on
two cores); this file builds in about a second and needs nothing but a C compiler.

Each shared library is cached under `$ADAPMTL_CACHE_DIR` (default `~/.cache/adapmtl`)
in `native/`, named by a hash of the source, the flags, the compiler and this CPU, so
an edited kernel, another compiler or another machine builds afresh. Without a
compiler (or with `ADAPMTL_NO_NATIVE=1`; 0, false, no or off keep it) `kernels(name)` returns None and callers fall
back to PyTorch; `status(name)` says why. `ADAPMTL_NATIVE_FLAGS` replaces the compiler
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
from pathlib import Path

import torch

SOURCES = {name: Path(__file__).with_name("kernels") / f"{name}.c" for name in ("sparse_conv2d", "sparse_linear")}
SOURCE = SOURCES["sparse_conv2d"]
_POINTER, _SIZE = ctypes.c_void_p, ctypes.c_int64
# (argument types, result type) of each library's entry points, besides adapmtl_simd_lanes and adapmtl_openmp
SIGNATURES = {
    "sparse_conv2d": {"adapmtl_sparse_conv2d_f32": ([_POINTER] * 8 + [_SIZE] * 2, None),
                      "adapmtl_multiply_add_rounds": ([_SIZE], ctypes.c_float)},
    "sparse_linear": {"adapmtl_sparse_linear_f32": ([_POINTER] * 7 + [_SIZE] * 5, None),
                      "adapmtl_linear_stride": ([_SIZE], _SIZE)},
}
# -fopenmp: the kernel's threads come from the OpenMP runtime PyTorch already loaded (libgomp);
# the later sets serve compilers without OpenMP (one thread) or without -march=native
FLAG_SETS = (["-O3", "-march=native", "-fopenmp"], ["-O3", "-march=native"], ["-O3"])
_lock = threading.Lock()
_state: dict[str, tuple[ctypes.CDLL | None, str]] = {}  # kernel name: (library, why or why not)


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


def build(compiler: str, flags: list[str], directory: Path, source: Path = SOURCE) -> Path:
    """Compile the kernel `source` (a C file) with `flags` into `directory` (atomically) and return
    the library's path, `<source name>-<hash>.so`.

    Raises RuntimeError with the compiler's messages if it fails; OSError if the compiler cannot
    be run or `directory` cannot be written."""
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([source.read_text(), " ".join(flags), version, _cpu_identity()]).encode())
    target = directory / f"{source.stem}-{key.hexdigest()[:16]}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as scratch:  # same filesystem: the rename is atomic
        built = Path(scratch) / target.name
        result = subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", str(built), str(source)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} {' '.join(flags)} failed:\n{result.stderr.strip()}")
        os.replace(built, target)
    return target


def _load(path: Path, name: str) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    for function, (arguments, result) in SIGNATURES[name].items():
        getattr(library, function).argtypes = arguments
        getattr(library, function).restype = result
    library.adapmtl_simd_lanes.restype = ctypes.c_int
    library.adapmtl_openmp.restype = ctypes.c_int
    return library


def disabled_by_environment() -> bool:
    """Whether ADAPMTL_NO_NATIVE asks for no kernel: any value but unset, empty, 0, false, no or off (any case),
    so that ADAPMTL_NO_NATIVE=0 keeps the kernel as a reader would expect."""
    return os.environ.get("ADAPMTL_NO_NATIVE", "").strip().lower() not in ("", "0", "false", "no", "off")


def kernels(name: str = "sparse_conv2d") -> ctypes.CDLL | None:
    """The loaded kernel library `name` (a key of SOURCES), built on first use; None where it
    cannot be built. Raises KeyError for an unknown name."""
    source = SOURCES[name]
    with _lock:
        if name in _state:
            return _state[name][0]
        library, reason = None, ""
        compiler = find_compiler()
        if disabled_by_environment():
            reason = f"disabled by ADAPMTL_NO_NATIVE={os.environ['ADAPMTL_NO_NATIVE']}"
        elif compiler is None:
            reason = "no C compiler found (set CC, or install gcc or clang)"
        else:
            errors = []
            custom = os.environ.get("ADAPMTL_NATIVE_FLAGS")
            for flags in [custom.split()] if custom else FLAG_SETS:
                try:
                    library = _load(build(compiler, flags, cache_dir(), source), name)
                    threads = "OpenMP threads" if library.adapmtl_openmp() else "one thread (no OpenMP)"
                    reason = (f"built with {compiler} {' '.join(flags)}, {library.adapmtl_simd_lanes()} SIMD lanes, "
                              f"{threads}")
                    break
                except (OSError, RuntimeError) as error:
                    errors.append(str(error))
            else:
                reason = "the kernel did not build: " + "\n".join(errors)
        _state[name] = library, reason
        return library


def status(name: str = "sparse_conv2d") -> str:
    """Why the kernel library `name` is or is not available (builds it if not tried yet)."""
    kernels(name)
    return _state[name][1]


def conv2d_arguments(tap_start: torch.Tensor, channels: torch.Tensor, values: torch.Tensor,
                     bias: torch.Tensor | None, geometry: torch.Tensor,
                     clamp: torch.Tensor | None = None) -> tuple[int | None, ...]:
    """The addresses `sparse_conv2d` passes for one layer at one input size: the nonzeros (grouped as
    kernels/sparse_conv2d.c says), the bias [O] or None, the geometry (int64 [15]) and the clamp
    (float32 [2], [low, high]) or None. Made once and kept by the caller (`Direct`), with the tensors:
    the addresses are valid only while those live unchanged in place."""
    return (tap_start.data_ptr(), channels.data_ptr(), values.data_ptr(),
            bias.data_ptr() if bias is not None else None, geometry.data_ptr(),
            clamp.data_ptr() if clamp is not None else None)


def sparse_conv2d(x: torch.Tensor, out: torch.Tensor, arguments: tuple[int | None, ...]) -> None:
    """Fill `out` [B, O, Ho, Wo] with the sparse convolution of `x` [B, C, H, W] (float32, contiguous)
    by the layer whose `conv2d_arguments` are `arguments`.

    The caller guarantees the shapes agree with the geometry and that every channel index is
    below C (the kernel reads raw memory). Runs on torch.get_num_threads() threads.
    """
    library = kernels()
    assert library is not None, "sparse_conv2d called without a native kernel"
    library.adapmtl_sparse_conv2d_f32(x.data_ptr(), out.data_ptr(), *arguments, x.shape[0], torch.get_num_threads())


def linear_stride(tokens: int) -> int:
    """Row length (floats) of the sparse Linear kernel's transposed input: `tokens` rounded up to whole vectors."""
    library = kernels("sparse_linear")
    assert library is not None, "linear_stride called without a native kernel"
    return int(library.adapmtl_linear_stride(tokens))


def sparse_linear(x: torch.Tensor, out: torch.Tensor, row_start: torch.Tensor, columns: torch.Tensor,
                  values: torch.Tensor, bias: torch.Tensor | None, scratch: torch.Tensor, tile_vectors: int) -> None:
    """Fill `out` [tokens, O] with `x` [tokens, I] times the CSR weight (row_start int64 [O + 1],
    columns int32, values float32) plus `bias` [O] (float32, contiguous, CPU).

    `scratch`: at least I * linear_stride(tokens) floats, 64-byte aligned. The caller guarantees the
    shapes agree and every column index is below I (the kernel reads raw memory). Runs on
    torch.get_num_threads() threads; `tile_vectors` (1..8): vectors of tokens per register tile.
    """
    library = kernels("sparse_linear")
    assert library is not None, "sparse_linear called without a native kernel"
    library.adapmtl_sparse_linear_f32(x.data_ptr(), out.data_ptr(), row_start.data_ptr(), columns.data_ptr(),
                                      values.data_ptr(), bias.data_ptr() if bias is not None else None,
                                      scratch.data_ptr(), x.shape[0], x.shape[1], out.shape[1], tile_vectors,
                                      torch.get_num_threads())
