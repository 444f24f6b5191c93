"""Activation checkpointing (``with_cp``): same outputs and gradients, blocks really recomputed."""
import pytest
import torch

from sts3d.models import create_recognizer
from sts3d.models.checkpointing import checkpoint_blocks


@pytest.mark.parametrize("name, frames", [("x3d_s", 4), ("slowfast50_4x16", 8), ("r2plus1d34", 4)])
def test_with_cp_keeps_outputs_and_gradients(name, frames):
    torch.manual_seed(0)
    plain = create_recognizer(name, 5, sts=True, dropout=0.0)
    checkpointed = create_recognizer(name, 5, sts=True, dropout=0.0, with_cp=True)
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    x = torch.randn(2, 3, frames, 32, 32)
    plain(x).square().sum().backward()
    checkpointed(x).square().sum().backward()
    for (key, a), b in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=key)


def test_checkpointed_blocks_run_their_forward_again_in_backward():
    model = create_recognizer("x3d_s", 5)
    blocks = checkpoint_blocks(model.backbone)
    assert blocks == 26  # X3D-S: ceil(2.2 x (1, 2, 5, 3)) blocks
    calls = []
    first = next(m for m in model.backbone.modules() if type(m).__name__ == "BlockX3D")
    first.conv1.register_forward_hook(lambda *args: calls.append(1))
    model(torch.randn(1, 3, 2, 32, 32)).sum().backward()
    assert len(calls) == 2
