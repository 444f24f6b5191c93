// Depthwise convolutions of one (T, H, W) plane per (sample, channel), as sums of "branches": tap lists
// (dt, dy, dx) run over a zero-padded, stride-phase-split copy of the plane, so that every tap is one contiguous
// multiply-add loop over a frame. A branch can read the frame as it is, as one row-major sequence, or its
// transpose, and maps its output positions onto the plane's output (every n-th position, transposed): what the
// STS static half's line kernels need. The stock 3x3x3 depthwise conv is a single branch of 27 taps.
//
// A tap can also be an "edge" tap: applied to a range of output rows only, optionally skipping one output column.
// The faithful STS height line, a line along the column-major frame, is the 9x1 line on the rows plus such taps for
// the positions where the original's sequence runs on into the next (or previous) column.
//
// Tensors are NCDHW float32 (contiguous); weights (C, K) with a column index per tap. Forward and backward are
// parallel over planes (forward) and over channels (backward, so each thread owns its channels' weight gradient).
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

namespace {

// GCC / Clang vector of 16 floats, any alignment: AVX-512 registers with -march=native on such CPUs, split into
// narrower ones elsewhere.
typedef float vf __attribute__((vector_size(64), aligned(4), may_alias));
constexpr int64_t kLanes = 16, kBlock = 4 * kLanes;  // outputs per register block
inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
inline int64_t blocks(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

struct EdgeTap {
  int64_t at, col, r0, r1;  // offset, weight column, output rows [r0, r1)
  std::vector<float> keep;  // over those rows' grid positions: 0 at the skipped output column, else 1
};

// One branch on a plane of T frames of H x W. Its buffers: sh * sw phases of plen floats, each T + 2 pt frames
// (and a spare one) of PR x PC; its output grid T frames of PR x PC, the valid outputs in rows [0, out_rows) and
// columns [0, out_cols). Without a stride, the zeros after a row (frame) are also the zeros before the next.
struct Branch {
  bool transpose_in, sequence, transpose_out;
  int64_t sh, sw, pt, ph, pw;
  int64_t rows, cols;                   // the branch's input frame: (H, W), (W, H), or a sequence (1, H * W)
  int64_t out_rows, out_cols;           // its valid output grid
  int64_t view_cols, every_r, every_c;  // the output viewed with view_cols columns, every n-th row / column taken
  int64_t PR, PC, F, plen, olen;
  size_t id = 0;                        // its position among all branches of the call (its scratch buffers)
  int64_t margin;                       // zeros before an output-gradient buffer (the transposed gather reads there)
  std::vector<int64_t> tap_at, tap_col;  // full taps: buffer offset (phase + shift), weight column
  std::vector<EdgeTap> edges;
  struct Run { int64_t out, grid, len; };
  std::vector<Run> runs;                 // a frame's output positions [out, out + len) are grid [grid, grid + len)
  std::vector<int32_t> grid_of;          // where runs are short (transposed outputs): output position -> grid

  // s: transpose_in, sequence, sh, sw, pt, ph, pw, out_rows, out_cols, view_cols, every_r, every_c, transpose_out,
  // K, then per tap dt, dy, dx, weight column, r0, r1 (-1: every row), skipped column (-1: none)
  Branch(const std::vector<int64_t>& s, int64_t T, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    TORCH_CHECK(s.size() >= 14 && s.size() == 14 + 7 * static_cast<size_t>(s[13]),
                "depthwise stencil: bad branch spec");
    transpose_in = s[0]; sequence = s[1]; sh = s[2]; sw = s[3]; pt = s[4]; ph = s[5]; pw = s[6];
    out_rows = s[7]; out_cols = s[8]; view_cols = s[9]; every_r = s[10]; every_c = s[11]; transpose_out = s[12];
    rows = transpose_in ? W : H;
    cols = transpose_in ? H : W;
    if (sequence) { cols = rows * cols; rows = 1; }
    PR = out_rows + (sh == 1 ? ph : (2 * ph) / sh);
    PC = out_cols + (sw == 1 ? pw : (2 * pw) / sw);
    F = PR * PC;
    olen = T * F;
    plen = blocks((T + 2 * pt + 1) * F);
    margin = blocks((2 * pt + 1) * F);
    for (int64_t k = 0; k < s[13]; ++k) {
      const int64_t* v = s.data() + 14 + 7 * k;
      const int64_t dt = v[0] + pt, dy = v[1] + ph, dx = v[2] + pw;
      // unstrided, a tap is a flat offset, which may run across rows (the faithful lines); strided, a phase
      const int64_t at = sh == 1 && sw == 1 ? dt * F + dy * PC + dx
                                            : ((dy % sh) * sw + dx % sw) * plen + dt * F + (dy / sh) * PC + dx / sw;
      if (v[5] < 0) {
        TORCH_CHECK(at >= 0 && (sh * sw == 1 || (dy >= 0 && dx >= 0)), "depthwise stencil: a tap beyond the padding");
        tap_at.push_back(at);
        tap_col.push_back(v[3]);
      } else {
        TORCH_CHECK(sh == 1 && sw == 1 && v[4] >= 0 && v[5] <= out_rows, "depthwise stencil: bad edge tap");
        // A 0/1 factor, not a subtraction afterwards: the skipped positions stay exact (a sum of zeros is 0)
        std::vector<float> keep((v[5] - v[4]) * PC, 1.f);
        for (int64_t r = 0; v[6] >= 0 && r < v[5] - v[4]; ++r) keep[r * PC + v[6]] = 0.f;
        edges.push_back({at, v[3], v[4], v[5], std::move(keep)});
      }
    }
    for (int64_t ho = 0; ho < Ho; ++ho) for (int64_t wo = 0; wo < Wo; ++wo) {
      const int64_t a = transpose_out ? wo : ho, b = transpose_out ? ho : wo;
      const int64_t m = a * every_r * view_cols + b * every_c;  // index in the valid output, row-major
      TORCH_CHECK(m < out_rows * out_cols, "depthwise stencil: a branch's output does not cover the output map");
      const int64_t out = ho * Wo + wo, grid = (m / out_cols) * PC + m % out_cols;
      if (!runs.empty() && runs.back().out + runs.back().len == out && runs.back().grid + runs.back().len == grid)
        ++runs.back().len;
      else
        runs.push_back({out, grid, 1});
      grid_of.push_back(grid);
    }
    if (runs.size() * 4 > grid_of.size()) runs.clear();  // mostly single positions: an index loop is faster
    else grid_of.clear();
  }
  int64_t phases_len() const { return sh * sw * plen + kBlock; }  // room for a register block's reads
  int64_t grid_len() const { return margin + blocks(olen) + plen + kBlock; }
  // The grid span from the first frame's first output to the last frame's last (junk rows between frames included:
  // one long loop is faster than a loop per frame)
  int64_t output_span(int64_t T) const { return (T - 1) * F + out_rows * PC; }
};

// The phase columns [j0, j1) of phase column offset c that hold input columns (j * sw + c - pw in [0, cols)).
inline std::pair<int64_t, int64_t> phase_columns(const Branch& b, int64_t c) {
  const int64_t j0 = std::max<int64_t>(0, (b.pw - c + b.sw - 1) / b.sw);
  const int64_t last = b.cols - 1 - c + b.pw;  // the last input column's position, times sw
  const int64_t j1 = last < 0 ? 0 : std::min<int64_t>(b.PC, last / b.sw + 1);
  return {j0, std::max(j0, j1)};
}

// Row copies between a frame row and a phase row, the stride a constant where it is 1, 2 or 4 (so they vectorize)
template <int64_t kStride, bool kAdd>
inline void strided_row(float* __restrict row, float* __restrict phase_row, int64_t j0, int64_t j1, int64_t shift,
                        int64_t stride) {
  const int64_t sw = kStride > 0 ? kStride : stride;
  for (int64_t j = j0; j < j1; ++j) {
    if (kAdd) row[j * sw + shift] += phase_row[j];
    else phase_row[j] = row[j * sw + shift];
  }
}

template <bool kAdd>
inline void row_copy(float* row, float* phase_row, int64_t j0, int64_t j1, int64_t shift, int64_t sw) {
  if (sw == 1) strided_row<1, kAdd>(row, phase_row, j0, j1, shift, sw);
  else if (sw == 2) strided_row<2, kAdd>(row, phase_row, j0, j1, shift, sw);
  else if (sw == 4) strided_row<4, kAdd>(row, phase_row, j0, j1, shift, sw);
  else strided_row<0, kAdd>(row, phase_row, j0, j1, shift, sw);
}

// kAdd false: src (T frames of rows x cols, contiguous) -> the phases' unpadded part (their padding stays zero);
// kAdd true: the frames += the phases' unpadded part
template <bool kAdd>
void phase_copy(float* frames, float* P, const Branch& b, int64_t T) {
  for (int64_t a = 0; a < b.sh; ++a) for (int64_t c = 0; c < b.sw; ++c) {
    float* phase = P + (a * b.sw + c) * b.plen;
    const auto [j0, j1] = phase_columns(b, c);
    for (int64_t t = 0; t < T; ++t) for (int64_t i = 0; i < b.PR; ++i) {
      const int64_t r = i * b.sh + a - b.ph;
      if (r < 0 || r >= b.rows) continue;
      float* row = frames + (t * b.rows + r) * b.cols;
      float* phase_row = phase + (t + b.pt) * b.F + i * b.PC;
      if (b.sw == 1 && !kAdd) std::memcpy(phase_row + b.pw, row, b.cols * sizeof(float));
      else row_copy<kAdd>(row, phase_row, j0, j1, c - b.pw, b.sw);
    }
  }
}

void to_phases(const float* src, float* P, const Branch& b, int64_t T) {
  phase_copy<false>(const_cast<float*>(src), P, b, T);  // only read
}

void add_from_phases(const float* P, float* dst, const Branch& b, int64_t T) {
  phase_copy<true>(dst, const_cast<float*>(P), b, T);  // only read
}

// O[q] = sum_k w[k] * S[at[k] + q] for q < n rounded up to kLanes (S and O have room), the sums in registers
void gather_taps(const float* S, const int64_t* at, const float* w, int64_t K, float* O, int64_t n) {
  int64_t q = 0;
  for (; q + kBlock <= n; q += kBlock) {
    vf a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t k = 0; k < K; ++k) {
      const float* p = S + at[k] + q;
      const vf wk = w[k] + vf{};
      a0 += wk * load(p);
      a1 += wk * load(p + kLanes);
      a2 += wk * load(p + 2 * kLanes);
      a3 += wk * load(p + 3 * kLanes);
    }
    store(O + q, a0); store(O + q + kLanes, a1); store(O + q + 2 * kLanes, a2); store(O + q + 3 * kLanes, a3);
  }
  for (; q < n; q += kLanes) {
    vf a = {};
    for (int64_t k = 0; k < K; ++k) a += (w[k] + vf{}) * load(S + at[k] + q);
    store(O + q, a);
  }
}

// sum_q G[q] S[at[k] + q] for q < n, added to gw[col[k]], for kTaps taps at once (their sums in registers)
template <int64_t kTaps>
void dot_block(const float* G, const float* S, const int64_t* at, const int64_t* col, int64_t n, float* gw) {
  const int64_t nv = n / kLanes * kLanes;
  vf acc[kTaps] = {};
  for (int64_t q = 0; q < nv; q += kLanes) {
    const vf g = load(G + q);
#pragma GCC unroll 8
    for (int64_t k = 0; k < kTaps; ++k) acc[k] += g * load(S + at[k] + q);
  }
  for (int64_t k = 0; k < kTaps; ++k) {
    float s = 0.f;
    for (int64_t l = 0; l < kLanes; ++l) s += acc[k][l];
    for (int64_t q = nv; q < n; ++q) s += G[q] * S[at[k] + q];
    gw[col[k]] += s;
  }
}

void dot_taps(const float* G, const float* S, const int64_t* at, const int64_t* col, int64_t K, int64_t n,
              float* gw) {
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) dot_block<8>(G, S, at + k, col + k, n, gw);
  for (; k + 4 <= K; k += 4) dot_block<4>(G, S, at + k, col + k, n, gw);
  for (; k < K; ++k) dot_block<1>(G, S, at + k, col + k, n, gw);
}

// The grid position where an edge tap's rows start in frame t
inline int64_t edge_start(const Branch& b, const EdgeTap& e, int64_t t) { return t * b.F + e.r0 * b.PC; }

// O = sum_k w[col_k] * P[at_k + q] over the output grid
void stencil(const float* P, const float* w, const Branch& b, int64_t T, float* O) {
  std::vector<float> wk(b.tap_col.size());
  for (size_t k = 0; k < wk.size(); ++k) wk[k] = w[b.tap_col[k]];
  gather_taps(P, b.tap_at.data(), wk.data(), wk.size(), O, b.output_span(T));
  for (const EdgeTap& e : b.edges) {
    const float we = w[e.col];
    const float* __restrict keep = e.keep.data();
    for (int64_t t = 0; t < T; ++t) {
      float* __restrict o = O + edge_start(b, e, t);
      const float* __restrict p = P + e.at + edge_start(b, e, t);
      for (size_t i = 0; i < e.keep.size(); ++i) o[i] += we * p[i] * keep[i];
    }
  }
}

// GP[at_k + q] += w[col_k] * G[q], the transpose of stencil: per phase a gather GP[m] = sum w_k G[m - at_k] over
// its taps, on the rows that hold input, then the edge taps. G has b.margin zeros before it and room after it.
void stencil_transposed(const float* G, const float* w, const Branch& b, int64_t T, float* GP) {
  // Rows of a phase frame that hold input: without a row stride [ph, ph + rows), else all of them
  const int64_t first = b.sh == 1 ? b.ph * b.PC : 0, span = b.sh == 1 ? b.rows * b.PC : b.F;
  for (int64_t ph = 0; ph < b.sh * b.sw; ++ph) {
    std::vector<int64_t> at;
    std::vector<float> wk;
    for (size_t k = 0; k < b.tap_at.size(); ++k) {
      if (b.tap_at[k] / b.plen != ph) continue;
      at.push_back(-(b.tap_at[k] % b.plen));
      wk.push_back(w[b.tap_col[k]]);
    }
    const int64_t m = ph * b.plen + b.pt * b.F + first, n = (T - 1) * b.F + span;
    if (at.empty()) std::fill(GP + m, GP + m + n, 0.f);
    else gather_taps(G + (m - ph * b.plen), at.data(), wk.data(), at.size(), GP + m, n);
  }
  for (const EdgeTap& e : b.edges) {
    const float we = w[e.col];
    const float* __restrict keep = e.keep.data();
    for (int64_t t = 0; t < T; ++t) {
      const float* __restrict g = G + edge_start(b, e, t);
      float* __restrict gp = GP + e.at + edge_start(b, e, t);
      for (size_t i = 0; i < e.keep.size(); ++i) gp[i] += we * g[i] * keep[i];
    }
  }
}

// gw[col_k] += sum_q G[q] P[at_k + q] (G is zero outside the valid outputs)
void weight_grad(const float* G, const float* P, const Branch& b, int64_t T, float* gw) {
  dot_taps(G, P, b.tap_at.data(), b.tap_col.data(), b.tap_at.size(), b.output_span(T), gw);
  for (const EdgeTap& e : b.edges) {
    float s = 0.f;
    const float* keep = e.keep.data();
    for (int64_t t = 0; t < T; ++t) {
      const float* g = G + edge_start(b, e, t);
      const float* p = P + e.at + edge_start(b, e, t);
#pragma omp simd reduction(+ : s)
      for (size_t i = 0; i < e.keep.size(); ++i) s += g[i] * p[i] * keep[i];
    }
    gw[e.col] += s;
  }
}

struct Group {
  int64_t c0, c1;
  std::vector<Branch> branches;
};

// specs: per group, its branch count, then per branch its length and its spec (see Branch)
std::vector<Group> make_groups(const std::vector<int64_t>& bounds, const std::vector<int64_t>& specs, int64_t T,
                               int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  std::vector<Group> groups;
  size_t at = 0, id = 0;
  for (size_t g = 0; g + 1 < bounds.size(); ++g) {
    TORCH_CHECK(at < specs.size(), "depthwise stencil: a channel group without branches");
    Group grp{bounds[g], bounds[g + 1], {}};
    const int64_t count = specs[at++];
    for (int64_t i = 0; i < count; ++i) {
      TORCH_CHECK(at < specs.size() && at + 1 + specs[at] <= specs.size(), "depthwise stencil: truncated spec");
      const std::vector<int64_t> spec(specs.begin() + at + 1, specs.begin() + at + 1 + specs[at]);
      at += 1 + specs[at];
      grp.branches.emplace_back(spec, T, H, W, Ho, Wo);
      grp.branches.back().id = id++;
    }
    groups.push_back(std::move(grp));
  }
  TORCH_CHECK(at == specs.size(), "depthwise stencil: specs left over");
  return groups;
}

const Group& group_of(const std::vector<Group>& groups, int64_t c) {
  for (const auto& g : groups) if (c >= g.c0 && c < g.c1) return g;
  TORCH_CHECK(false, "depthwise stencil: channel ", c, " is in no group");
}

// One thread's buffers. Per branch, the input phases and the output-gradient grid keep their padding and junk
// positions zero from plane to plane (only the valid positions are written), so they are cleared once; the others
// are written before they are read, and the transposed planes exist only where a branch reads the transpose.
struct Scratch {
  std::vector<std::vector<float>> phases, grad_grid;
  std::unique_ptr<float[]> grid, grad_phases, plane, plane_grad;  // phases and grad_grid: one per Branch::id

  Scratch(const std::vector<Group>& groups, int64_t plane_len, bool backward) {
    size_t o = 0, p = 0;
    bool transposes = false;
    for (const auto& g : groups) for (const auto& b : g.branches) {
      phases.emplace_back(b.phases_len(), 0.f);
      if (backward) grad_grid.emplace_back(b.grid_len(), 0.f);
      o = std::max<size_t>(o, blocks(b.olen) + b.F);
      p = std::max<size_t>(p, b.phases_len());
      transposes |= b.transpose_in;
    }
    if (transposes) plane.reset(new float[plane_len]);
    if (backward) {
      grad_phases.reset(new float[p]);
      if (transposes) plane_grad.reset(new float[plane_len]);
    } else {
      grid.reset(new float[o]);
    }
  }
};

// d[w * H + h] (+)= s[h * W + w] for each of T frames, in cache tiles
template <bool kAdd>
void transpose_frames(const float* __restrict src, float* __restrict dst, int64_t T, int64_t H, int64_t W) {
  constexpr int64_t kTile = 16;
  for (int64_t t = 0; t < T; ++t) {
    const float* s = src + t * H * W;
    float* d = dst + t * H * W;
    for (int64_t h0 = 0; h0 < H; h0 += kTile) for (int64_t w0 = 0; w0 < W; w0 += kTile) {
      const int64_t h1 = std::min(H, h0 + kTile), w1 = std::min(W, w0 + kTile);
      for (int64_t w = w0; w < w1; ++w) for (int64_t h = h0; h < h1; ++h) {
        if (kAdd) d[w * H + h] += s[h * W + w];
        else d[w * H + h] = s[h * W + w];
      }
    }
  }
}

void check(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, "depthwise stencil: ", name,
              " must be a float32 CPU tensor");
}

}  // namespace

// x (N, C, T, H, W); weight (C, K). Channels [bounds[g], bounds[g + 1]) are the sum of the branches of group g.
// The branch specs arrive as an int64 tensor: a list argument costs the dispatcher time per element.
std::vector<int64_t> spec_list(const at::Tensor& specs) {
  TORCH_CHECK(specs.scalar_type() == at::kLong && specs.dim() == 1, "depthwise stencil: specs must be 1-D int64");
  const auto s = specs.contiguous();
  return std::vector<int64_t>(s.data_ptr<int64_t>(), s.data_ptr<int64_t>() + s.numel());
}

at::Tensor depthwise_forward(const at::Tensor& x_, const at::Tensor& weight_, const std::vector<int64_t>& bounds,
                             const at::Tensor& spec_tensor, int64_t Ho, int64_t Wo) {
  const auto specs = spec_list(spec_tensor);
  check(x_, "input"); check(weight_, "weight");
  const auto x = x_.contiguous();
  const auto weight = weight_.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4), K = weight.size(1);
  const auto groups = make_groups(bounds, specs, T, H, W, Ho, Wo);
  auto out = at::empty({N, C, T, Ho, Wo}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(groups, T * H * W, false);
    for (int64_t nc = begin; nc < end; ++nc) {
      const int64_t c = nc % C;
      const float* src = xp + nc * T * H * W;
      float* dst = op + nc * T * Ho * Wo;
      const Group& g = group_of(groups, c);
      bool transposed = false;
      for (size_t bi = 0; bi < g.branches.size(); ++bi) {
        const Branch& b = g.branches[bi];
        if (b.transpose_in && !transposed) {
          transpose_frames<false>(src, scratch.plane.get(), T, H, W);
          transposed = true;
        }
        float* P = scratch.phases[b.id].data();
        to_phases(b.transpose_in ? scratch.plane.get() : src, P, b, T);
        stencil(P, wp + c * K, b, T, scratch.grid.get());
        for (int64_t t = 0; t < T; ++t) {
          float* d = dst + t * Ho * Wo;
          const float* o = scratch.grid.get() + t * b.F;
          for (const auto& r : b.runs) {
            if (bi == 0) std::memcpy(d + r.out, o + r.grid, r.len * sizeof(float));
            else for (int64_t i = 0; i < r.len; ++i) d[r.out + i] += o[r.grid + i];
          }
          const int64_t n = b.grid_of.size();
          const int32_t* idx = b.grid_of.data();
          if (bi == 0) for (int64_t p = 0; p < n; ++p) d[p] = o[idx[p]];
          else for (int64_t p = 0; p < n; ++p) d[p] += o[idx[p]];
        }
      }
    }
  });
  return out;
}

std::vector<at::Tensor> depthwise_backward(const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& weight_,
                                           const std::vector<int64_t>& bounds, const at::Tensor& spec_tensor,
                                           bool need_x, bool need_w) {
  const auto specs = spec_list(spec_tensor);
  check(grad_, "grad"); check(x_, "input"); check(weight_, "weight");
  const auto grad = grad_.contiguous();
  const auto x = x_.contiguous();
  const auto weight = weight_.contiguous();
  const int64_t N = x.size(0), C = x.size(1), T = x.size(2), H = x.size(3), W = x.size(4), K = weight.size(1);
  const int64_t Ho = grad.size(3), Wo = grad.size(4);
  const auto groups = make_groups(bounds, specs, T, H, W, Ho, Wo);
  at::Tensor gx = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor gw = need_w ? at::zeros_like(weight) : at::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* gxp = need_x ? gx.data_ptr<float>() : nullptr;
  float* gwp = need_w ? gw.data_ptr<float>() : nullptr;
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(groups, T * H * W, true);
    for (int64_t c = begin; c < end; ++c) {
      const Group& g = group_of(groups, c);
      for (int64_t n = 0; n < N; ++n) {
        const int64_t nc = n * C + c;
        const float* src = xp + nc * T * H * W;
        const float* go = gp + nc * T * Ho * Wo;
        float* gxplane = need_x ? gxp + nc * T * H * W : nullptr;
        bool transposed = false, first_x = true, first_t = true;
        for (const Branch& b : g.branches) {
          float* G = scratch.grad_grid[b.id].data() + b.margin;
          for (int64_t t = 0; t < T; ++t) {
            float* o = G + t * b.F;
            const float* s = go + t * Ho * Wo;
            for (const auto& r : b.runs) std::memcpy(o + r.grid, s + r.out, r.len * sizeof(float));
            for (size_t p = 0; p < b.grid_of.size(); ++p) o[b.grid_of[p]] = s[p];
          }
          if (need_w) {
            if (b.transpose_in && !transposed) {
              transpose_frames<false>(src, scratch.plane.get(), T, H, W);
              transposed = true;
            }
            float* P = scratch.phases[b.id].data();
            to_phases(b.transpose_in ? scratch.plane.get() : src, P, b, T);
            weight_grad(G, P, b, T, gwp + c * K);
          }
          if (need_x) {
            stencil_transposed(G, wp + c * K, b, T, scratch.grad_phases.get());
            float* dst = b.transpose_in ? scratch.plane_grad.get() : gxplane;
            bool& first = b.transpose_in ? first_t : first_x;
            if (first) std::fill(dst, dst + T * H * W, 0.f);
            first = false;
            add_from_phases(scratch.grad_phases.get(), dst, b, T);
          }
        }
        if (need_x && first_x) std::fill(gxplane, gxplane + T * H * W, 0.f);
        if (need_x && !first_t)  // the (T, W, H) gradient of the transposed reads, back to (T, H, W)
          transpose_frames<true>(scratch.plane_grad.get(), gxplane, T, W, H);
      }
    }
  });
  return {gx, gw};
}
