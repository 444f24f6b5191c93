"""sts3d's compiled CPU kernels (``sts3d/csrc``), built on first use.

The depthwise stencil convs (:mod:`sts3d.models.stencil`) and the dense STS conv's tap sum
(:mod:`sts3d.models.sts`) are a small C++ extension, compiled with the system C++ compiler through
``torch.utils.cpp_extension`` (``ninja`` from PyPI) the first time they are needed, and cached under
``~/.cache/torch_extensions``, one build per machine kind and checkout (:func:`build_name`): about 20 s on 2 cores
(the kernels include ATen's headers only and the binding pybind11's; all of ``torch/extension.h`` made it 98 s). Where that fails, or with ``STS3D_NO_EXTENSION=1``,
:func:`available` is false and the callers use their pure-PyTorch forms (one warning says why): everything runs,
slower.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import warnings
from pathlib import Path

import torch

_SOURCES = [Path(__file__).resolve().parents[1] / "csrc" / name
            for name in ("depthwise_stencil.cpp", "tap_sum.cpp", "bindings.cpp")]
_built: dict = {}  # "module": the compiled module, or None once it could not be built


def _cpu_tag() -> str:
    """The CPU model and its instruction-set flags, hashed: -march=native builds are cached per machine kind, so a
    cache shared between different CPUs never runs foreign instructions (clock speeds, which vary, are left out)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "any"
    stable = [line for line in info.split("\n\n")[0].splitlines() if re.match(r"(model name|flags)\s*:", line)]
    return hashlib.sha1("\n".join(stable).encode()).hexdigest()[:8]


def build_name(csrc: Path = _SOURCES[0].parent) -> str:
    """The extension's name, which is also its build folder's: ``sts3d_native_<cpu>_<checkout>``. Keyed by the CPU
    (see :func:`_cpu_tag`) and by the resolved sources folder ``csrc``, hashed: the cached ``build.ninja`` names its
    sources by absolute path, so two checkouts sharing one folder would rebuild it in turn (20-45 s each time)."""
    checkout = hashlib.sha1(str(Path(csrc).resolve()).encode()).hexdigest()[:6]
    return f"sts3d_native_{_cpu_tag()}_{checkout}"


def cpu_name() -> str:
    """The CPU's model name and the widest vector instructions it has, which the -march=native kernels use and
    their speed follows (``'AMD EPYC, avx2'``): for benchmark headers."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return "unknown CPU"
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set(fields.get("flags", "").split())
    widest = next((isa for isa in ("avx512f", "avx2", "avx", "sse4_2") if isa in flags), "no avx")
    return f"{fields.get('model name', 'unknown CPU')}, {widest}"


def _cpp_extension():
    """``torch.utils.cpp_extension``, imported without its warning that no CUDA runtime was found (true, and
    irrelevant to a CPU extension)."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    return cpp_extension


def compile_kernels(name: str, sources: list[Path]):
    """Builds ``sources`` as the extension ``name`` (or loads it from the cache) with the kernels' compiler flags;
    also what ``bench/kernel_builds.py`` builds another commit's kernels with."""
    return _cpp_extension().load(name, [str(path) for path in sources],
                                 extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])


def _build():
    if os.environ.get("STS3D_NO_EXTENSION", "") not in ("", "0"):
        return None
    try:
        name = build_name()
        if not (Path(_cpp_extension()._get_build_directory(name, verbose=False)) / f"{name}.so").exists():
            print("sts3d: compiling the CPU kernels (once per machine and checkout, about 20 s)", file=sys.stderr,
                  flush=True)
        return compile_kernels(name, _SOURCES)
    except Exception as error:  # no compiler, no ninja, a read-only cache...: the pure-PyTorch forms still work
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else ""
        warnings.warn(f"sts3d: the compiled CPU kernels could not be built ({type(error).__name__}: {reason}); "
                      "depthwise convs use the slower 'frames' form", RuntimeWarning, stacklevel=4)
        return None


def extension():
    """The compiled module, or ``None`` when it cannot be built or is switched off."""
    if "module" not in _built:
        _built["module"] = _build()
    return _built["module"]


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the compiled kernels can be used (builds them on the first call)."""
    return extension() is not None
