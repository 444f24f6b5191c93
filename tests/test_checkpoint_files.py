"""Checkpoint files: what ``read_checkpoint`` accepts under ``weights_only=True``, and ``load_from``
(``load_pretrained``) taking only a file of the model's own network."""
import pathlib
import zipfile

import numpy as np
import pytest
import timm
import torch

from sts3d.checkpoint import CheckpointError, load_pretrained, read_checkpoint, save_checkpoint
from sts3d.models import IMAGE_MODELS, create_recognizer

STAGE1 = {network: image_name for image_name, (network, *_) in IMAGE_MODELS.items()}


def original_best_checkpoint(path):
    """What mmcv's EvalHook leaves in an original ``best_*.pth``: NumPy scalars (and an array) in ``meta``."""
    torch.save({"state_dict": {"backbone.w": torch.ones(2)},
                "meta": {"epoch": 50, "hook_msgs": {"best_score": np.float64(0.725), "last_ckpt": "epoch_50.pth",
                                                    "counts": np.arange(3, dtype=np.int32)},
                         "flags": (np.bool_(True), np.float32(0.5), np.int64(7))}}, path)
    return path


def renamed_in_pickle(source, target, old, new):
    """``source`` with ``old`` replaced by ``new`` in its pickle (torch.save writes protocol 2, whose globals are
    plain ``module\\nname`` text)."""
    with zipfile.ZipFile(source) as read, zipfile.ZipFile(target, "w") as write:
        for info in read.infolist():
            data = read.read(info.filename)
            write.writestr(info, data.replace(old, new) if info.filename.endswith("data.pkl") else data)
    return target


def test_numpy_scalars_and_arrays_in_meta_read_with_weights_only(tmp_path):
    checkpoint = read_checkpoint(original_best_checkpoint(tmp_path / "best_top1_acc_epoch_50.pth"))
    assert checkpoint["meta"]["hook_msgs"]["best_score"] == 0.725
    assert checkpoint["meta"]["hook_msgs"]["counts"].tolist() == [0, 1, 2]
    assert checkpoint["meta"]["flags"] == (True, 0.5, 7)


def test_numpy_1_pickles_read_too(tmp_path):
    """NumPy 1 (the original's environment) pickled its scalars under ``numpy.core``, NumPy 2 under
    ``numpy._core``."""
    written = original_best_checkpoint(tmp_path / "numpy2.pth")
    with zipfile.ZipFile(written) as file:
        pickle = file.read(next(name for name in file.namelist() if name.endswith("data.pkl")))
    current = b"numpy._core" if b"numpy._core" in pickle else b"numpy.core"
    for name in (b"numpy._core", b"numpy.core"):
        path = renamed_in_pickle(written, tmp_path / f"{name.decode()}.pth", current, name)
        assert read_checkpoint(path)["meta"]["hook_msgs"]["best_score"] == 0.725


def test_a_refused_pickle_names_its_global_on_the_first_line(tmp_path):
    """The command lines print an error's first line only; torch's message names the global further down."""
    path = tmp_path / "odd.pth"
    torch.save({"state_dict": {}, "where": pathlib.PurePosixPath("/data")}, path)
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(path)
    first = str(error.value).splitlines()[0]
    assert first.startswith(f"{path}: cannot be read") and "pathlib.PurePosixPath" in first


@pytest.mark.parametrize("network", sorted(STAGE1))
def test_stage1_checkpoint_loads_every_backbone_weight_into_stage2(network, tmp_path):
    """A file of the model's own network loads all its backbone weights, STS on or off; only the head's 1000
    classes (X3D: fc2) are left out."""
    path = tmp_path / "model_best.pth.tar"
    save_checkpoint({"arch": STAGE1[network], "state_dict": timm.create_model(STAGE1[network]).state_dict()}, path)
    for sts in (False, True):
        model = create_recognizer(network, num_classes=5, sts=sts)
        report = load_pretrained(model, path)
        assert {k for k in model.state_dict() if k.startswith("backbone.")} <= set(report.loaded)
        assert {k for k in report.missing + [k for k, _, _ in report.mismatched]} <= {
            "cls_head.fc_cls.weight", "cls_head.fc_cls.bias", "cls_head.fc2.weight", "cls_head.fc2.bias"}


def test_inflated_load_fills_every_backbone_weight(tmp_path):
    """The SSv2 SlowOnly config's ``inflate = True``: all weights load, 3-tap kernels rebuilt from the centre."""
    path = tmp_path / "model_best.pth.tar"
    state = timm.create_model(STAGE1["slowonly50"]).state_dict()
    save_checkpoint({"state_dict": state}, path)
    model = create_recognizer("slowonly50", num_classes=5, sts=True)
    report = load_pretrained(model, path, inflate=True)
    assert {k for k in model.state_dict() if k.startswith("backbone.")} <= set(report.loaded)
    key = next(k for k, v in state.items() if v.dim() == 5 and v.shape[2] == 3)
    centre = state[key][:, :, 1:2] / 3
    assert torch.equal(model.state_dict()["backbone" + key[len("get_feature"):]],
                       torch.cat((centre / 3, centre, centre / 3), dim=2))


def test_original_fine_tuned_checkpoint_of_another_network_is_an_error(tmp_path):
    """SlowOnly-50 and ir-CSN-50 share most backbone keys; the error's first line says so, with counts and the
    first key that does not fit."""
    path = tmp_path / "slowonly_k400.pth"
    torch.save({"state_dict": create_recognizer("slowonly50", num_classes=400).state_dict()}, path)
    model = create_recognizer("csn50_ir", num_classes=400)
    with pytest.raises(CheckpointError) as error:
        load_pretrained(model, path)
    assert str(error.value).splitlines()[0].startswith(
        f"{path} looks like another network: 80 backbone weights missing, 10 of another shape (first: backbone.")
