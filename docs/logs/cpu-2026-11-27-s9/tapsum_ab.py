"""Per dense 3x1x1 STS layer: forward + backward of the STS conv with the compiled tap sum (sts3d/csrc/tap_sum.cpp)
against PyTorch's shifted adds (sts._compiled_taps patched to None), interleaved, median of rounds; and the tap sum
+ its transpose alone."""
import statistics, sys, time
sys.path.insert(0, "bench")
import torch
from sts3d.models import create_backbone, sts
from sts3d.models.sts import STSConv3d, _spread_taps, _sum_taps
from sts_layers import layer_inputs
torch.set_num_threads(2)
real = sts._compiled_taps
print(f"threads=2 batch=2 rounds=7 repeats=3 torch={torch.__version__}")
print("backbone layer (C_in, T, H, W) -> C_out stride mode | layer ms compiled / shifts | tap sum + transpose ms compiled / shifts")
for name in ("r2plus1d34", "slowfast50_4x16", "slowfast50_8x8", "slowonly50"):
    model = create_backbone(name, sts=True)
    seen = set()
    for key, shape in layer_inputs(name, 8, 128).items():
        m = model.get_submodule(key)
        if m.kernel_size != (3, 1, 1) or (shape, m.out_channels, m.stride) in seen:
            continue
        seen.add((shape, m.out_channels, m.stride))
        for mode in ("faithful", "aligned"):
            conv = STSConv3d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, bias=False, mode=mode)
            x = torch.randn(*shape, requires_grad=True)
            with torch.no_grad():
                y = conv(x)
            c = y.shape[1]; q = c // 4
            lw, lh = ("row_major", "col_major") if mode == "faithful" else ("w", "h")
            axes = ((0, q, lw), (q, 2 * q, lh), (2 * q, c, "t"))
            taps = torch.randn(y.shape[0], 3 * c, *y.shape[2:]); out = torch.empty_like(y); gy = torch.empty_like(taps)
            t = {k: [] for k in ("lc", "ls", "tc", "ts")}
            for r in range(7):
                for compiled in ((True, False) if r % 2 == 0 else (False, True)):
                    sts._compiled_taps = real if compiled else (lambda *a: None)
                    s = time.perf_counter()
                    for _ in range(3):
                        conv(x).sum().backward()
                    t["lc" if compiled else "ls"].append((time.perf_counter() - s) / 3e-3)
                    s = time.perf_counter()
                    for _ in range(3):
                        _sum_taps(out, taps, axes); _spread_taps(gy, y, axes)
                    t["tc" if compiled else "ts"].append((time.perf_counter() - s) / 3e-3)
            sts._compiled_taps = real
            md = {k: statistics.median(v) for k, v in t.items()}
            print(f"{name:<16} {str(shape[1:]):<22} -> {m.out_channels:<4} {m.stride[0]} {mode:<8} | {md['lc']:7.2f} / {md['ls']:7.2f} = {md['ls']/md['lc']:4.2f}x | {md['tc']:6.2f} / {md['ts']:6.2f} = {md['ts']/md['tc']:4.2f}x", flush=True)
