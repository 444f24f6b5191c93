"""``sts3d.models.triton_launch.Launch`` without a GPU: a stand-in kernel records how each launch was made."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings

import pytest
import torch

from sts3d.models import triton_launch


class _Compiled:
    """What a compiled Triton kernel offers here: ``packed_metadata`` and ``[grid]`` giving its launcher."""
    packed_metadata = ()

    def __init__(self, calls: list, fails: bool):
        self.calls, self.fails = calls, fails

    def __getitem__(self, grid):
        def launcher(*arguments):
            if self.fails:
                raise TypeError("launcher() takes 9 positional arguments")
            self.calls.append(("direct", grid, arguments))
        return launcher


class _Kernel:
    """A JIT function's stand-in: ``kernel[grid](...)`` is the dispatch; ``fn`` gives the signature."""

    def __init__(self, fails: bool = False):
        self.calls: list = []
        self.fails = fails

        def fn(x_ptr, out_ptr, n, SCALE: int = 2, BLOCK: int = 64):
            pass
        self.fn = fn

    def __getitem__(self, grid):
        def dispatch(*arguments, num_warps, **consts):
            self.calls.append(("dispatch", grid, arguments, consts))
            return _Compiled(self.calls, self.fails)
        return dispatch


@pytest.fixture
def direct(monkeypatch):
    monkeypatch.setattr(triton_launch, "DIRECT", True)
    # the specialisation asks CUDA for the current device; here every launch is on one device
    monkeypatch.setattr(triton_launch.Launch, "_specialisation", staticmethod(lambda tensors: (0, len(tensors))))


def test_later_launches_go_to_the_compiled_launcher(direct):
    kernel = _Kernel()
    launch = triton_launch.Launch(kernel, (4,), (10,), dict(BLOCK=32), num_warps=2)
    x, out = torch.zeros(3), torch.zeros(3)
    launch(x, out)
    launch(x, out)
    assert [call[0] for call in kernel.calls] == ["dispatch", "direct"]
    # every argument in the kernel's order, defaults filled in, on the grid padded to three axes
    assert kernel.calls[1][1] == (4, 1, 1)
    assert kernel.calls[1][2][2:] == (10, 2, 32)


def test_a_failing_launcher_falls_back_to_the_dispatch(direct):
    kernel = _Kernel(fails=True)
    launch = triton_launch.Launch(kernel, (4,), (10,), {}, num_warps=2)
    x, out = torch.zeros(3), torch.zeros(3)
    launch(x, out)
    with pytest.warns(UserWarning, match="launching through Triton's dispatch from now on"):
        launch(x, out)
    assert [call[0] for call in kernel.calls] == ["dispatch", "dispatch"]
    assert triton_launch.DIRECT is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no further attempt, so no further warning
        launch(x, out)
    assert [call[0] for call in kernel.calls] == ["dispatch"] * 3


@pytest.mark.parametrize("setting", [None, "0", "1"])
def test_direct_launch_setting(setting):
    """On by default where Triton's launchers take every argument; ``STS3D_DIRECT_LAUNCH=0`` turns it off."""
    env = {k: v for k, v in os.environ.items() if k != "STS3D_DIRECT_LAUNCH"}
    if setting is not None:
        env["STS3D_DIRECT_LAUNCH"] = setting
    done = subprocess.run([sys.executable, "-c", "from sts3d.models import triton_launch as t; "
                           "print(t.DIRECT, t._launchers_take_every_argument())"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    direct, supported = done.stdout.split()
    assert direct == str(supported == "True" and setting != "0")
