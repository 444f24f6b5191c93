"""The reference data in ``../shared/reference`` and the rule that sets the weights its outputs were made with."""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(os.environ.get("STS3D_REFERENCE_DIR", REPO.parent / "shared" / "reference"))


def reference_path(*parts: str) -> Path:
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference file {path} is missing (set STS3D_REFERENCE_DIR to the shared/reference folder)")
    return path


def load_keys(*parts: str) -> dict[str, list[int]]:
    return json.loads(reference_path(*parts).read_text())


def load_case(*parts: str) -> dict[str, np.ndarray]:
    with np.load(reference_path(*parts)) as data:
        return dict(data)


def reference_value(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The value the reference rule gives the state-dict entry ``key`` of ``shape``."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    if key.endswith("running_mean"):
        value = rng.standard_normal(shape) * 0.1
    elif key.endswith("running_var"):
        value = rng.uniform(1.0, 2.0, shape)
    elif len(shape) == 1 and key.endswith("weight"):
        value = rng.uniform(0.5, 1.0, shape)
    elif len(shape) == 1:
        value = rng.standard_normal(shape) * 0.1
    else:
        value = rng.standard_normal(shape) * np.sqrt(1.0 / np.prod(shape[1:]))
    return np.asarray(value, dtype=np.float32)


def set_reference_weights(model: torch.nn.Module, seed: int) -> None:
    """Overwrite every parameter and buffer of ``model`` (except ``num_batches_tracked``) by the reference rule."""
    state = model.state_dict()
    for key, tensor in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        tensor.copy_(torch.from_numpy(reference_value(key, tuple(tensor.shape), seed)))


def reference_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng([seed, 0]).standard_normal(shape).astype(np.float32))


def assert_close_to_reference(actual: torch.Tensor, expected: np.ndarray, what: str) -> None:
    """Elementwise within ``2e-4 * max|expected|``, the reference README's tolerance."""
    actual = actual.detach().numpy()
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != reference {expected.shape}"
    bound = 2e-4 * float(np.abs(expected).max())
    worst = float(np.abs(actual - expected).max())
    assert worst <= bound, f"{what}: max abs error {worst:.3g} > {bound:.3g}"
