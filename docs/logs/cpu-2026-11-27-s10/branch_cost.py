"""Per-branch cost of the faithful stride-2 STS static half on the CPU (forward + backward), X3D-S stride-2 layers."""
import time, statistics, torch
from sts3d.models import stencil as st
from sts3d.models.strided import out_size
torch.set_num_threads(2)
def plan(groups): return st._plan_tensor(st._flatten(groups))
def bench(c, t, h, w, reps=5, rounds=7):
    s = 2
    x = torch.randn(2, c, t, h, w, requires_grad=True)
    wt = torch.randn(c, 27, requires_grad=True)
    oh, ow = out_size(h, s), out_size(w, s)
    br = st.sts_static_branches(s, t, h, w, True)
    al = st.sts_static_branches(s, t, h, w, False)
    dyn = [st.dense_branch((3, 3, 3), s, t, h, w)]
    variants = {"plain (dense both halves)": [dyn, dyn], "aligned": [al, dyn], "faithful": [br, dyn],
                "centre only": [br[:1], dyn], "centre+width": [br[:2], dyn], "centre+height": [[br[0], br[2]], dyn]}
    plans = {k: plan(v) for k, v in variants.items()}
    g = torch.randn(2, c, t, oh, ow)
    def run(p):
        out = st._forward(x, wt, [0, c // 2, c], p, oh, ow)
        st._backward(g, x, wt, [0, c // 2, c], p, True, True)
    times = {k: [] for k in plans}
    for _ in range(rounds):
        for k, p in plans.items():
            run(p)
            t0 = time.perf_counter()
            for _ in range(reps): run(p)
            times[k].append((time.perf_counter() - t0) / reps * 1e3)
    base = statistics.median(times["plain (dense both halves)"])
    print(f"{c}x{t}x{h}x{w}: " + ", ".join(f"{k} {statistics.median(v):.2f} ms ({statistics.median(v)/base:.2f})" for k, v in times.items()), flush=True)
for shape in ((54, 8, 64, 64), (108, 8, 32, 32), (216, 8, 16, 16), (432, 8, 8, 8)):
    bench(*shape)
