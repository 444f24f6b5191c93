"""The stage-1 image models: registered in timm, the original's pre-training keys and eval-mode logits."""
import pytest
import timm
import torch

import sts3d  # noqa: F401  (registers the v3d_* models in timm)
from sts3d.models import IMAGE_MODELS
from reference import assert_close_to_reference, load_case, load_keys, reference_input, set_reference_weights

NAMES = sorted(IMAGE_MODELS)


def test_six_models_registered_in_timm():
    assert set(timm.list_models("v3d_*")) == set(NAMES) and len(NAMES) == 6


@pytest.mark.parametrize("name", NAMES)
def test_keys_and_logits_match_original(name):
    model = timm.create_model(name, num_classes=10, drop_path_rate=0.0).eval()
    expected = load_keys("pretrain", f"{name}.json")
    actual = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(actual) == list(expected) and actual == expected
    data = load_case("pretrain", f"{name}.npz")
    set_reference_weights(model, 1234)
    x = reference_input(data["input"].shape, 1234)
    assert torch.equal(x, torch.from_numpy(data["input"]))
    with torch.no_grad():
        assert_close_to_reference(model(x), data["output0"], name)


@pytest.mark.parametrize("name", NAMES)
def test_drop_path_is_stochastic_depth_on_residual_branches(name):
    """With drop_path_rate set, training-mode outputs vary between calls, eval-mode ones do not."""
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4, drop_path_rate=0.5)
    drop_paths = [m for m in model.modules() if type(m).__name__ == "DropPath"]
    assert drop_paths, "no DropPath module"
    rates = [m.drop_prob for m in drop_paths]
    assert max(rates) == pytest.approx(0.5) and rates == sorted(rates) or "slowfast" in name
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    # keep BN statistics out of the comparison: only the residual branches are random
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_pretrained_true_is_refused():
    with pytest.raises(ValueError, match="no hosted weights"):
        timm.create_model("v3d_x3d_s_224", pretrained=True)
