"""Params, MACs and STS conv counts against the spec's figures (section 1.3, 1.4), and the get_flops.py tool."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from sts3d.flops import (backbone_complexity, count_macs, count_params, count_sts_convs, measure, parse_shape,
                         resolve_model)
from sts3d.models import backbone_entry, create_backbone
from sts3d.models.sts import STSConv3d

REPO = Path(__file__).resolve().parents[1]
GET_FLOPS = REPO / "Spatiotemporal_Finetuning" / "tools" / "analysis" / "get_flops.py"

# fvcore GMACs at the seed's training clips and backbone params (M), spec sections 1.4 and 3.
SPEC_GMACS = {"csn50_ir": 81.05, "slowfast50_4x16": 27.82, "x3d_s": 2.03}
SPEC_PARAMS_M = {"csn50_ir": 12.31, "slowfast50_4x16": 33.56, "x3d_s": 2.09}
SPEC_STS_CONVS = {"csn50_ir": 16, "x3d_s": 26, "slowonly50": 9, "slowfast50_4x16": 25, "slowfast50_8x8": 25}


def test_count_macs_of_plain_layers():
    conv = nn.Conv3d(8, 16, (3, 3, 3), padding=1, groups=2, bias=False)
    x = torch.zeros(2, 8, 4, 10, 10)
    assert count_macs(conv, x) == 2 * 16 * (8 // 2) * 27 * 4 * 10 * 10
    linear = nn.Linear(32, 10)
    assert count_macs(linear, torch.zeros(3, 32)) == 3 * 32 * 10
    bn = nn.BatchNorm3d(8)
    assert count_macs(bn, x) == 2 * x.numel()  # fvcore's eval-mode rule: scale and shift
    assert count_macs(bn, x, count_norm=False) == 0
    assert bn.training  # the training flag is restored


def test_count_params_and_sts_convs():
    model = nn.Sequential(nn.Conv3d(4, 4, 3, padding=1, groups=4), STSConv3d(4, 4, 3, padding=1, groups=4))
    assert count_params(model) == 2 * (4 * 27 + 4)
    assert count_sts_convs(model) == 1


@pytest.mark.parametrize("name", sorted(SPEC_GMACS))
def test_backbone_macs_match_spec_with_and_without_sts(name):
    plain = backbone_complexity(name, sts=False)
    sts = backbone_complexity(name, sts=True)
    t, h, w = backbone_entry(name).clip_shape
    assert plain.input_shape == (1, 3, t, h, w)
    assert plain.gmacs == pytest.approx(SPEC_GMACS[name], rel=0.02)
    assert plain.params_m == pytest.approx(SPEC_PARAMS_M[name], abs=0.01)
    assert sts.macs == plain.macs
    assert sts.params == plain.params
    assert plain.sts_convs == 0
    aligned = backbone_complexity(name, sts=True, sts_mode="aligned")
    assert aligned.macs == plain.macs


@pytest.mark.parametrize("name", sorted(SPEC_STS_CONVS))
def test_sts_conv_counts_match_spec(name):
    model, _ = resolve_model(name, sts=True)
    assert count_sts_convs(model) == SPEC_STS_CONVS[name]


def test_meta_count_equals_real_count():
    torch.manual_seed(0)
    shape = (1, 3, 4, 64, 64)
    real = create_backbone("x3d_s", sts=True)
    meta, _ = resolve_model("x3d_s", sts=True, device="meta")
    assert count_macs(real, torch.zeros(shape)) == count_macs(meta, torch.zeros(shape, device="meta"))


@pytest.mark.parametrize("values, expected", [
    ((1, 3, 32, 224, 224), (1, 3, 32, 224, 224)),
    ((3, 32, 224, 224), (1, 3, 32, 224, 224)),
    ((16, 112, 96), (1, 3, 16, 112, 96)),
    ((112, 96), (1, 3, 8, 112, 96)),
    ((160,), (1, 3, 8, 160, 160)),
])
def test_parse_shape(values, expected):
    assert parse_shape(values, default_t=8) == expected


@pytest.mark.parametrize("values", [(), (1, 2, 3, 4, 5, 6), (3, 0, 224, 224)])
def test_parse_shape_rejects_bad_values(values):
    with pytest.raises(ValueError):
        parse_shape(values, default_t=8)


def test_resolve_model_names_the_valid_backbones():
    with pytest.raises(ValueError, match="csn50_ir"):
        resolve_model("resnet50")
    with pytest.raises(ValueError, match="config file not found"):
        resolve_model("configs/recognition/csn/some_config.py")


def test_get_flops_of_a_config_counts_backbone_and_head_on_its_clip():
    """The seed's ``get_flops.py CONFIG``: the X3D-S K400 config's training clip is 13 x 160 x 160; its head
    (fc1 432 -> 2048, fc2 2048 -> 400) adds about 0.001 GMACs and 1.70 M params to the backbone's."""
    config = REPO / "Spatiotemporal_Finetuning/configs/recognition/x3d/x3d_s_13x6_STS_k400_video.py"
    model, clip = resolve_model(str(config))
    assert clip == (13, 160, 160)
    result = measure(model, (1, 3, *clip))
    backbone = measure(resolve_model("x3d_s", sts=True)[0], (1, 3, *clip))
    assert result.sts_convs == backbone.sts_convs == 26
    assert result.params - backbone.params == 432 * 2048 + 2048 * 400 + 400  # fc1 without bias, as the seed's
    assert 0 < result.macs - backbone.macs < 0.01e9


def test_get_flops_script():
    done = subprocess.run([sys.executable, str(GET_FLOPS), "x3d_s", "--shape", "3", "13", "160", "160", "--sts"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Input shape: (1, 3, 13, 160, 160)" in out
    assert "26 STS convs" in out
    gmacs = float(out.split("GMACs:")[1].split()[0])
    assert gmacs == pytest.approx(SPEC_GMACS["x3d_s"], rel=0.02)
    assert "Params: 2.09 M" in out


def get_flops_main():
    spec = importlib.util.spec_from_file_location("get_flops", GET_FLOPS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_get_flops_rejects_unknown_names(capsys):
    assert get_flops_main()(["no_such_model"]) == 2
    assert "valid names: csn50_ir" in capsys.readouterr().err


def test_get_flops_script_with_a_config_as_the_seed_ran_it(capsys):
    """``get_flops.py CONFIG --shape N C T H W``, mmaction's command line; the SSv2 X3D-S config's 8 one-frame
    segments reach the backbone as 8 frames."""
    config = REPO / "Spatiotemporal_Finetuning/configs/recognition/x3d/x3d_s_1x8_STS_sthv2_video.py"
    assert get_flops_main()([str(config), "--shape", "1", "3", "8", "224", "224"]) == 0
    out = capsys.readouterr().out
    assert "(backbone and head), 26 STS convs" in out and "Input shape: (1, 3, 8, 224, 224)" in out
    assert get_flops_main()([str(config)]) == 0
    assert "Input shape: (1, 3, 8, 224, 224)" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("model = dict(type='Recognizer3D')\n", "no key 'data'"),
    ("x = undefined_name\n", "NameError"),
])
def test_get_flops_names_a_config_it_cannot_build(tmp_path, capsys, text, message):
    config = tmp_path / "broken.py"
    config.write_text(text)
    assert get_flops_main()([str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {config}") and message in err and len(err.splitlines()) == 1


def test_get_flops_sts_flag_is_for_backbone_names(capsys):
    config = REPO / "Spatiotemporal_Finetuning/configs/recognition/x3d/x3d_s_13x6_STS_k400_video.py"
    assert get_flops_main()([str(config), "--sts"]) == 2
    assert "--sts is for a backbone name" in capsys.readouterr().err
