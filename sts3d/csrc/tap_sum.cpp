// The dense 3x1x1 STS conv's tap sum and its transpose, one pass over each (sample, channel) plane.
//
// The dense form computes every filter's three taps as one pointwise product, y (N, 3C, T, H, W): channel blocks tap
// 0, tap 1, tap 2. Output channel c is tap 1 plus tap 0 of the element before and tap 2 of the element after, along
// channel c's sequence: the width line for c < C/4, the height line for c < C/2, time otherwise. The faithful mode's
// lines run along the row-major and column-major flattened frame (on into the next row or column), the aligned
// mode's stop at the frame's edges. Every "before / after" relation is a set of contiguous runs, out[d + i] +=
// tap[s + i], listed once per plane shape; the transpose runs the same list the other way, grad_tap[s + i] +=
// grad[d + i]; every element adds its tap 0 before its tap 2, as PyTorch's operators do, so float32 and float64
// results are theirs bit for bit. Those need 7-9 passes over the whole tensor forward and 13-15 backward; here a
// plane stays in cache. Sums in float (double for double); float32, float64, bfloat16.
// ATen's own headers, not torch/extension.h: that one (all of libtorch's C++ API and pybind11) took most of a
// 55 s compile per file on a 2-core VM; the Python binding is bindings.cpp's alone
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <array>
#include <vector>

namespace {

struct Run {
  int tap;          // 0: tap 0 (the element before), 2: tap 2 (the element after)
  int64_t dst, src, len;  // out[dst + i] += tap[src + i], i < len
};

// The runs of a channel of each kind: 0 width line, 1 height line, 2 time.
std::vector<Run> runs_of(int kind, bool faithful, int64_t T, int64_t H, int64_t W) {
  const int64_t frame = H * W;
  std::vector<Run> runs;
  auto add = [&](int tap, int64_t dst, int64_t src, int64_t len) {
    if (len > 0) runs.push_back({tap, dst, src, len});
  };
  if (kind == 2) {
    add(0, frame, 0, (T - 1) * frame);
    add(2, 0, frame, (T - 1) * frame);
    return runs;
  }
  for (int64_t f = 0; f < T; ++f) {
    const int64_t base = f * frame;
    if (kind == 0 && faithful) {  // the row-major flattened frame
      add(0, base + 1, base, frame - 1);
      add(2, base, base + 1, frame - 1);
    } else if (kind == 0) {  // each row
      for (int64_t h = 0; h < H; ++h) {
        add(0, base + h * W + 1, base + h * W, W - 1);
        add(2, base + h * W, base + h * W + 1, W - 1);
      }
    } else {  // down each column; faithful: on from the bottom of one column to the top of the next
      add(0, base + W, base, frame - W);
      if (faithful) add(0, base + 1, base + (H - 1) * W, W - 1);
      add(2, base, base + W, frame - W);
      if (faithful) add(2, base + (H - 1) * W, base + 1, W - 1);
    }
  }
  return runs;
}

// The runs of the three kinds of channel for planes of T x H x W
using PlaneRuns = std::array<std::vector<Run>, 3>;
PlaneRuns plane_runs(bool faithful, int64_t T, int64_t H, int64_t W) {
  return {runs_of(0, faithful, T, H, W), runs_of(1, faithful, T, H, W), runs_of(2, faithful, T, H, W)};
}

template <typename A, typename S>
inline void add_run(A* __restrict dst, const S* __restrict src, int64_t len) {
  for (int64_t i = 0; i < len; ++i) dst[i] += static_cast<A>(src[i]);
}

template <typename scalar_t>
void sum_planes(const scalar_t* y, scalar_t* out, int64_t N, int64_t C, int64_t quarter,
                const PlaneRuns& runs, int64_t L) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(L);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const scalar_t* taps[3] = {y + (n * 3 * C + c) * L, y + (n * 3 * C + C + c) * L,
                                 y + (n * 3 * C + 2 * C + c) * L};
      acc_t* acc = buffer.data();
      for (int64_t i = 0; i < L; ++i) acc[i] = static_cast<acc_t>(taps[1][i]);
      for (const Run& r : runs[c < quarter ? 0 : c < 2 * quarter ? 1 : 2])
        add_run(acc + r.dst, taps[r.tap] + r.src, r.len);
      scalar_t* o = out + nc * L;
      for (int64_t i = 0; i < L; ++i) o[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

template <typename scalar_t>
void spread_planes(const scalar_t* grad, scalar_t* grad_y, int64_t N, int64_t C, int64_t quarter,
                   const PlaneRuns& runs, int64_t L) {
  using acc_t = at::opmath_type<scalar_t>;
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buffer(2 * L);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t n = nc / C, c = nc % C;
      const scalar_t* g = grad + nc * L;
      acc_t* acc[3] = {buffer.data(), nullptr, buffer.data() + L};
      std::fill(buffer.begin(), buffer.end(), acc_t(0));
      for (const Run& r : runs[c < quarter ? 0 : c < 2 * quarter ? 1 : 2])
        add_run(acc[r.tap] + r.src, g + r.dst, r.len);
      scalar_t* taps[3] = {grad_y + (n * 3 * C + c) * L, grad_y + (n * 3 * C + C + c) * L,
                           grad_y + (n * 3 * C + 2 * C + c) * L};
      for (int64_t i = 0; i < L; ++i) {
        taps[0][i] = static_cast<scalar_t>(acc[0][i]);
        taps[1][i] = g[i];
        taps[2][i] = static_cast<scalar_t>(acc[2][i]);
      }
    }
  });
}

void check(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == 5, what, ": a contiguous 5-D CPU tensor");
}

}  // namespace

// out (N, C, T, H, W) = the tap sum of y (N, 3C, T, H, W); both contiguous, out written whole.
void tap_sum_forward(const at::Tensor& y, at::Tensor& out, int64_t quarter, bool faithful) {
  check(y, "tap sum input");
  check(out, "tap sum output");
  const int64_t N = y.size(0), C = y.size(1) / 3, T = y.size(2), H = y.size(3), W = y.size(4);
  TORCH_CHECK(out.size(0) == N && out.size(1) == C && out.sizes().slice(2) == y.sizes().slice(2),
              "tap sum: output shape");
  const PlaneRuns runs = plane_runs(faithful, T, H, W);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, y.scalar_type(), "tap_sum_forward", [&] {
    sum_planes<scalar_t>(y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N, C, quarter, runs, T * H * W);
  });
}

// grad_y (N, 3C, T, H, W) = the transpose of the tap sum applied to grad (N, C, T, H, W); grad_y written whole.
void tap_sum_backward(const at::Tensor& grad, at::Tensor& grad_y, int64_t quarter, bool faithful) {
  check(grad, "tap sum gradient");
  check(grad_y, "tap sum input gradient");
  const int64_t N = grad.size(0), C = grad.size(1), T = grad.size(2), H = grad.size(3), W = grad.size(4);
  TORCH_CHECK(grad_y.size(0) == N && grad_y.size(1) == 3 * C && grad_y.sizes().slice(2) == grad.sizes().slice(2),
              "tap sum: input gradient shape");
  const PlaneRuns runs = plane_runs(faithful, T, H, W);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, grad.scalar_type(), "tap_sum_backward", [&] {
    spread_planes<scalar_t>(grad.data_ptr<scalar_t>(), grad_y.data_ptr<scalar_t>(), N, C, quarter, runs,
                            T * H * W);
  });
}
