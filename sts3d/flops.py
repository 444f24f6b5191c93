"""Model complexity: parameters, multiply-accumulates (MACs) and the number of STS convs.

MACs are counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which sees every aten
convolution and matmul, including the functional convs inside :class:`~sts3d.models.sts.STSConv3d`. It reports
FLOPs as 2 x MACs; :func:`count_macs` halves that. What video papers' tables call "GFLOPs" are these GMACs.

The original's ``get_flops.py`` used fvcore, which also counts batch norm: 2 ops per element for an affine BN in
eval mode (1 without affine). The counter does not know batch norm, so :func:`count_macs` adds a formula for it
that follows fvcore's rule (``count_norm=True``, the default); with it the six backbones come within 0.02 % of
the fvcore figures the spec gives. ``count_norm=False`` gives the convs and matmuls alone (X3D-S is then 3.4 %
lower, the others under 1 %). Pooling, activations and element-wise ops are counted by neither.

Counting runs on the ``meta`` device by default: no memory is allocated and no arithmetic is done, so even the
81 GMAC ir-CSN-50 clip is counted in well under a second on a CPU.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .models import backbone_entry, create_backbone, list_backbones
from .models.sts import STS_MODES, STSConv3d


def _batch_norm_flops(input_shape, weight_shape=None, *args, out_shape=None, **kwargs) -> int:
    """fvcore's eval-mode batch-norm count (2 per element with affine, 1 without), in FlopCounterMode's FLOP units.

    FlopCounterMode's totals are FLOPs = 2 x MACs, and :func:`count_macs` halves them, so each op counts twice here.
    """
    ops_per_element = 2 if weight_shape is not None else 1
    return 2 * ops_per_element * math.prod(input_shape)


_aten = torch.ops.aten
# The batch-norm ops a forward can dispatch to (CPU, meta, CUDA, ROCm); composite ops never reach the counter.
_BATCH_NORM_OPS = tuple(getattr(_aten, name) for name in (
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "_batch_norm_with_update", "_batch_norm_no_update", "cudnn_batch_norm", "miopen_batch_norm",
) if hasattr(_aten, name))


def count_macs(model: nn.Module, inputs: Any, count_norm: bool = True) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on ``inputs`` (a tensor or a tuple of arguments).

    Convolutions and matmuls are counted by PyTorch's ``FlopCounterMode``; ``count_norm`` adds batch norm the way
    fvcore counts it (see the module docstring). The model is put in ``eval()`` mode for the count and each
    module's training flag is restored afterwards.
    """
    args = inputs if isinstance(inputs, (tuple, list)) else (inputs,)
    mapping = {op: _batch_norm_flops for op in _BATCH_NORM_OPS} if count_norm else None
    modes = {m: m.training for m in model.modules()}  # restored one by one: some may be frozen in eval mode
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            model(*args)
    finally:
        for module, training in modes.items():
            module.training = training
    return counter.get_total_flops() // 2


def count_params(model: nn.Module) -> int:
    """The number of parameters (trainable or not; buffers such as BN running statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_sts_convs(model: nn.Module) -> int:
    """The number of convs that compute the STS convolution (:class:`STSConv3d` modules) in ``model``."""
    return sum(isinstance(m, STSConv3d) for m in model.modules())


def parse_shape(values: Sequence[int], default_t: int) -> tuple[int, int, int, int, int]:
    """The ``(N, C, T, H, W)`` clip shape meant by the ``--shape`` values of ``get_flops.py``.

    Five values are ``N C T H W``; four are ``C T H W`` (batch 1); three are ``T H W`` (batch 1, 3 channels);
    two are ``H W`` and one is ``S`` (a square ``S x S`` frame), both with ``default_t`` frames.
    """
    values = tuple(int(v) for v in values)
    if any(v <= 0 for v in values):
        raise ValueError(f"--shape values must be positive, got {' '.join(map(str, values))}")
    if len(values) == 5:
        return values  # type: ignore[return-value]
    if len(values) == 4:
        return (1, *values)  # type: ignore[return-value]
    if len(values) == 3:
        return (1, 3, *values)  # type: ignore[return-value]
    if len(values) == 2:
        return (1, 3, default_t, *values)  # type: ignore[return-value]
    if len(values) == 1:
        return (1, 3, default_t, values[0], values[0])
    raise ValueError(f"--shape takes 1 to 5 values (S | H W | T H W | C T H W | N C T H W), got {len(values)}")


class _BackboneAndHead(nn.Module):
    """A recognizer's forward on one clip ``(N, C, T, H, W)``: backbone, then head (what mmaction's ``get_flops``
    counted for a config)."""

    def __init__(self, recognizer: nn.Module) -> None:
        super().__init__()
        self.backbone, self.cls_head = recognizer.backbone, recognizer.cls_head

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        return self.cls_head(self.backbone(clip))


def _config_model(path: str, device: str | torch.device) -> tuple[nn.Module, tuple[int, int, int]]:
    """A fine-tuning config's recognizer (backbone and head, as the engine builds it) and its training clip; what is
    wrong with the file is one ``ValueError`` naming it."""
    from .config import ConfigError, load_config  # the fine-tuning stage's pieces, only for a config
    from .data.pipeline import clip_settings, num_segments
    from .models.builder import build_recognizer

    try:
        cfg = load_config(path)
    except ConfigError as error:  # its message names the file already
        raise ValueError(str(error)) from error
    try:
        pipeline = cfg["data"]["train"]["pipeline"]
        settings, _ = clip_settings(pipeline, "data.train.pipeline")
        with torch.device(device):
            recognizer = build_recognizer({**cfg["model"], "num_segments": num_segments(pipeline)})
    except KeyError as error:
        raise ValueError(f"{path}: no key {error.args[0]!r} (a config needs model and data.train.pipeline)") from error
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: {error}") from error
    frames = settings.num_clips if settings.clip_len == 1 else settings.clip_len
    return _BackboneAndHead(recognizer), (frames, settings.crop_size, settings.crop_size)


def resolve_model(name_or_config: str, sts: bool = False, sts_mode: str = "faithful",
                  device: str | torch.device = "meta") -> tuple[nn.Module, tuple[int, int, int]]:
    """The model that ``name_or_config`` names, built on ``device``, and its default ``(T, H, W)`` clip shape.

    A backbone name gives that backbone (``sts``, ``sts_mode`` apply). A fine-tuning config file (``.py``) gives its
    recognizer's backbone and head, STS as the config sets it (``sts`` is then an error), on the config's training
    clip (the SSv2 form's one-frame segments folded into time, as the backbone sees them).
    """
    if name_or_config.endswith(".py"):
        if sts:
            raise ValueError(f"{name_or_config}: --sts is for a backbone name; a config sets STS itself "
                             "(reshape_t / reshape_st / conv_cfg)")
        return _config_model(name_or_config, device)
    if name_or_config not in list_backbones():
        raise ValueError(f"unknown backbone {name_or_config!r}; valid names: {', '.join(list_backbones())}, or a "
                         "config file (.py)")
    with torch.device(device):
        model = create_backbone(name_or_config, sts=sts, sts_mode=sts_mode)
    return model, backbone_entry(name_or_config).clip_shape


@dataclass(frozen=True)
class Complexity:
    """The size and cost of one model on one input shape."""
    name: str
    input_shape: tuple[int, ...]
    params: int
    macs: int
    sts_convs: int

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    @property
    def gmacs(self) -> float:
        return self.macs / 1e9


def measure(model: nn.Module, input_shape: Sequence[int], name: str = "",
            device: str | torch.device | None = None, count_norm: bool = True) -> Complexity:
    """Params, MACs and STS convs of ``model`` on a zero clip of ``input_shape`` (on the model's device by default)."""
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else "cpu"
    clip = torch.zeros(tuple(input_shape), device=device)
    return Complexity(name=name or type(model).__name__, input_shape=tuple(input_shape), params=count_params(model),
                      macs=count_macs(model, clip, count_norm=count_norm), sts_convs=count_sts_convs(model))


def backbone_complexity(name: str, sts: bool = False, sts_mode: str = "faithful",
                        input_shape: Optional[Sequence[int]] = None,
                        device: str | torch.device = "meta", count_norm: bool = True) -> Complexity:
    """Params, MACs and STS convs of a named backbone; by default on one clip of the seed's training shape."""
    model, (t, h, w) = resolve_model(name, sts=sts, sts_mode=sts_mode, device=device)
    shape = tuple(input_shape) if input_shape is not None else (1, 3, t, h, w)
    return measure(model, shape, name=name, device=device, count_norm=count_norm)


def complexity_table(names: Optional[Sequence[str]] = None, sts_mode: str = "faithful",
                     device: str | torch.device = "meta",
                     count_norm: bool = True) -> list[tuple[Complexity, Complexity]]:
    """``(STS off, STS on)`` complexity of each backbone (all registered ones by default) at its clip shape."""
    rows = []
    for name in names if names is not None else list_backbones():
        rows.append((backbone_complexity(name, sts=False, device=device, count_norm=count_norm),
                     backbone_complexity(name, sts=True, sts_mode=sts_mode, device=device, count_norm=count_norm)))
    return rows


def format_table(rows: Sequence[tuple[Complexity, Complexity]]) -> str:
    """A plain-text table of :func:`complexity_table`'s rows."""
    header = ("backbone", "clip (T x H x W)", "params (M)", "GMACs", "GMACs, STS", "STS convs")
    lines = []
    for plain, sts in rows:
        _, _, t, h, w = plain.input_shape
        params = f"{plain.params_m:.2f}"
        if sts.params != plain.params:  # STS reuses the conv weights, so this should never show
            params += f" / {sts.params_m:.2f}"
        lines.append((plain.name, f"{t} x {h} x {w}", params, f"{plain.gmacs:.2f}",
                      f"{sts.gmacs:.2f}", str(sts.sts_convs)))
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i < 2 else f"{{:>{w}}}" for i, w in enumerate(widths))
    out = [fmt.format(*header), "  ".join("-" * w for w in widths)]
    out += [fmt.format(*row) for row in lines]
    return "\n".join(out)


def add_count_arguments(parser) -> None:
    """The counting options both command-line tools take: ``--sts-mode``, ``--device``, ``--no-norm``."""
    parser.add_argument("--sts-mode", choices=STS_MODES, default="faithful", help="STS behaviour (with STS on)")
    parser.add_argument("--device", default="meta",
                        help="where to run the count; 'meta' (default) does no arithmetic and allocates nothing")
    parser.add_argument("--no-norm", action="store_true",
                        help="count convs and matmuls only (by default batch norm is counted as fvcore counts it)")


def counted_what(no_norm: bool) -> str:
    return "convs and matmuls only" if no_norm else "convs, matmuls and batch norm, as fvcore counts them"

