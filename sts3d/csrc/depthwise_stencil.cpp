// Depthwise convolutions of one (T, H, W) plane per (sample, channel), as sums of "branches": tap lists
// (dt, dy, dx) run over a zero-padded, stride-phase-split copy of the plane, so that every tap is one contiguous
// multiply-add loop over a frame. A branch can read the frame as it is, as one row-major sequence, its transpose,
// or as "column pairs" (below), and maps its output positions onto the plane's output (every n-th position,
// transposed): what the STS static half's line kernels need. The stock 3x3x3 depthwise conv is a single branch of 27
// taps.
//
// Column pairs: the column-major sequence S of an H x W frame (H even) cut after every second column and the pieces
// set side by side, V[r, j] = S[2 j H + r] for rows r in [-4, 2H + 4), which run on into the neighbouring pieces (the
// sequence's ends read 0). The faithful height line at stride 2, the column-major sequence conv with stride 4 read
// as the output map, is then a 9x1 conv with row stride 4 on V, without the transposed copy of the frame.
//
// A tap can also be an "edge" tap: applied to a range of output rows only, optionally skipping one output column.
// The faithful STS height line, a line along the column-major frame, is the 9x1 line on the rows plus such taps for
// the positions where the original's sequence runs on into the next (or previous) column. An edge tap over all
// rows (or on a map of at most 4 rows) is run as a "masked" tap, with the full taps, its reads outside its rows and
// at its skipped column cleared by a bit mask (this lets the centre 3x3 share a frame stored without padding
// columns).
//
// Tensors are NCDHW float32 (contiguous); weights (C, K) with a column index per tap. Forward and backward are
// parallel over planes (forward) and over channels (backward, so each thread owns its channels' weight gradient),
// the channels taken from the groups in turn (interleaved_channels).
// ATen's own headers, not torch/extension.h: that one (all of libtorch's C++ API and pybind11) took most of a
// 55 s compile per file on a 2-core VM; the Python binding is bindings.cpp's alone
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace {

// GCC / Clang vector of the widest registers -march=native gives, any alignment: 16 floats with AVX-512, else 8.
// (16-float vectors on an AVX2 CPU are lowered to pairs of 8-float operations: the kernels ran 2.3-6.2x slower so,
// measured on an AVX2 EPYC.)
#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#else
constexpr int64_t kLanes = 8;
#endif
constexpr int64_t kBlock = 4 * kLanes;  // outputs per register block
constexpr int64_t kShortRow = 12;  // row copies shorter than this on average: copied element by element
typedef float vf __attribute__((vector_size(4 * kLanes), aligned(4), may_alias));
typedef uint32_t vu __attribute__((vector_size(4 * kLanes), aligned(4), may_alias));
inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
// p's floats where the mask is all ones, +0 where it is 0 (an AND, so an inf or NaN read there cannot leak)
inline vf masked(const float* p, const uint32_t* m) {
  return (vf)(*reinterpret_cast<const vu*>(p) & *reinterpret_cast<const vu*>(m));
}
inline void store(float* p, vf v) { *reinterpret_cast<vf*>(p) = v; }
inline int64_t blocks(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

struct EdgeTap {
  int64_t at, col, r0, r1;  // offset, weight column, output rows [r0, r1)
  std::vector<float> keep;  // over those rows' grid positions: 0 at the skipped output column, else 1
};

// One branch on a plane of T frames of H x W. Its buffers: sh * sw phases of plen floats, each T + 2 pt frames
// (and a spare one) of PR x PC; its output grid T frames of PR x PC, the valid outputs in rows [0, out_rows) and
// columns [0, out_cols). Without a stride, the zeros after a row (frame) are also the zeros before the next.
// How a branch reads the frame (stencil.py's FRAME, SEQUENCE, COLUMN_PAIRS)
enum Read : int64_t { kFrame = 0, kSequence = 1, kColumnPairs = 2 };

struct Branch {
  bool transpose_in, transpose_out;
  int64_t read;                         // a Read: the frame as it is, as a row-major sequence, or as column pairs
  int64_t sh, sw, pt, ph, pw;
  int64_t rows, cols;                   // the branch's input frame: (H, W), (W, H), a sequence (1, H * W), or V
  int64_t frame_len;                    // H * W
  // One frame's copy into the phases (frame t: dst + t * F <- src + t * frame_len), rows of n elements, every
  // copy_stride-th of the frame; where those rows are short, the same element by element instead (table_*: a loop
  // per row cost more than its copying on small maps, measured)
  struct RowCopy { int64_t dst, src, n; };
  std::vector<RowCopy> copies;
  int64_t copy_stride = 1;
  // copy_stride (2 or 4) row copies that read consecutive elements, src[copy_stride * j + k] <-> dst[k][j]: split
  // (and joined back) by vector shuffles, as a strided copy into one phase row cannot be (the add least of all)
  struct SplitCopy { int64_t src, n, dst[4]; };
  std::vector<SplitCopy> splits;
  bool frame_copy = false;                // rows contiguous on both sides: a frame at a time instead
  int64_t short_len = 0;                  // unstrided rows all of this length (< kShortRow): fixed-length copies
  std::vector<int32_t> table_dst, table_src;
  int64_t out_rows, out_cols;           // its valid output grid
  int64_t view_cols, every_r, every_c;  // the output viewed with view_cols columns, every n-th row / column taken
  int64_t PR, PC, F, plen, olen;
  size_t id = 0;                        // its position among all branches of the call (its scratch buffers)
  int64_t margin;                       // zeros before an output-gradient buffer (the transposed gather reads there)
  std::vector<int64_t> tap_at, tap_col;  // full taps: buffer offset (phase + shift), weight column
  std::vector<int64_t> mtap_at, mtap_col, mtap_mask;  // masked taps: offset, weight column, index in masks
  std::vector<std::vector<uint32_t>> masks;  // per distinct edge: over the output grid, laid out as grad_grid
  std::vector<std::vector<int64_t>> mask_keys;  // each mask's edge: r0, r1, skipped column
  int64_t in_margin = 0;                 // zeros before the phases: a masked tap may read above its first rows
  std::vector<EdgeTap> edges;
  struct PhaseTaps { std::vector<int64_t> at, col, mat; };  // per phase, for the transposed gather: -offsets
  std::vector<PhaseTaps> phase_taps;
  struct Run { int64_t out, grid, len; };
  std::vector<Run> runs;                 // a frame's output positions [out, out + len) are grid [grid, grid + len)
  std::vector<int32_t> grid_of;          // where runs are short (transposed outputs): output position -> grid

  // s: transpose_in, read, sh, sw, pt, ph, pw, out_rows, out_cols, view_cols, every_r, every_c, transpose_out,
  // K, then per tap dt, dy, dx, weight column, r0, r1 (-1: every row), skipped column (-1: none)
  Branch(const std::vector<int64_t>& s, int64_t T, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
    TORCH_CHECK(s.size() >= 14 && s.size() == 14 + 7 * static_cast<size_t>(s[13]),
                "depthwise stencil: bad branch spec");
    transpose_in = s[0]; read = s[1]; sh = s[2]; sw = s[3]; pt = s[4]; ph = s[5]; pw = s[6];
    out_rows = s[7]; out_cols = s[8]; view_cols = s[9]; every_r = s[10]; every_c = s[11]; transpose_out = s[12];
    rows = transpose_in ? W : H;
    cols = transpose_in ? H : W;
    frame_len = H * W;
    if (read == kSequence) { cols = rows * cols; rows = 1; }
    if (read == kColumnPairs) {
      TORCH_CHECK(!transpose_in && sh == 4 && sw == 1 && pt == 0 && ph == 4 && pw == 0 && H % 2 == 0,
                  "depthwise stencil: bad column-pair branch");
      rows = 2 * H;
      cols = (W + 1) / 2;
    }
    PR = out_rows + (sh == 1 ? ph : (2 * ph) / sh);
    PC = out_cols + (sw == 1 ? pw : (2 * pw) / sw);
    F = PR * PC;
    olen = T * F;
    plen = blocks((T + 2 * pt + 1) * F);
    margin = blocks((2 * pt + 1) * F);
    plan_copies(H, W);
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
      } else if (sh == 1 && sw == 1 && v[4] >= 0 && v[4] < v[5] && v[5] <= out_rows &&
                 (v[5] - v[4] == out_rows || out_rows <= 4)) {
        // over all rows, or on a map of a few rows: a masked tap, cheaper than a loop of its own (measured)
        mtap_at.push_back(at);
        mtap_col.push_back(v[3]);
        mtap_mask.push_back(mask_of(v[4], v[5], v[6]));
      } else {
        TORCH_CHECK(sh == 1 && sw == 1 && v[4] >= 0 && v[5] <= out_rows, "depthwise stencil: bad edge tap");
        // A 0/1 factor, not a subtraction afterwards: the skipped positions stay exact (a sum of zeros is 0)
        std::vector<float> keep((v[5] - v[4]) * PC, 1.f);
        for (int64_t r = 0; v[6] >= 0 && r < v[5] - v[4]; ++r) keep[r * PC + v[6]] = 0.f;
        edges.push_back({at, v[3], v[4], v[5], std::move(keep)});
      }
    }
    phase_taps.resize(sh * sw);
    for (size_t k = 0; k < tap_at.size(); ++k) {
      phase_taps[tap_at[k] / plen].at.push_back(-(tap_at[k] % plen));
      phase_taps[tap_at[k] / plen].col.push_back(tap_col[k]);
    }
    for (const int64_t a : mtap_at) {
      phase_taps[0].mat.push_back(-a);
      in_margin = std::max(in_margin, blocks(-a));  // its mask clears those reads
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
  void plan_copies(int64_t H, int64_t W) {
    frame_copy = read != kColumnPairs && sh == 1 && sw == 1 && pw == 0 && cols == PC;
    if (frame_copy) return;
    if (read == kColumnPairs) {
      copy_stride = 2;
      for (int64_t v = -ph; v < rows + ph; ++v) {  // row v of V: frame row r, columns 2 j + c
        const int64_t r = (v % H + H) % H, c = (v - r) / H;
        const int64_t j0 = std::max<int64_t>(0, (1 - c) / 2), j1 = std::min<int64_t>(cols, (W - c + 1) / 2);
        if (j1 > j0) copies.push_back({((v + ph) % sh) * plen + (v + ph) / sh * PC + j0, r * W + c + 2 * j0, j1 - j0});
      }
    } else {
      copy_stride = sw;
      for (int64_t a = 0; a < sh; ++a) for (int64_t c = 0; c < sw; ++c) {
        // the phase columns [j0, j1) that hold input columns (j * sw + c - pw in [0, cols))
        const int64_t j0 = std::max<int64_t>(0, (pw - c + sw - 1) / sw), last = cols - 1 - c + pw;
        const int64_t j1 = last < 0 ? 0 : std::min<int64_t>(PC, last / sw + 1);
        for (int64_t i = 0; i < PR && j1 > j0; ++i) {
          const int64_t r = i * sh + a - ph;
          if (r >= 0 && r < rows)
            copies.push_back({(a * sw + c) * plen + pt * F + i * PC + j0, r * cols + j0 * sw + c - pw, j1 - j0});
        }
      }
    }
    if (copy_stride == 2 || copy_stride == 4) {  // the copies of a split: sources s, s + 1, ..., the same length
      std::map<int64_t, std::vector<size_t>> at_src;  // several copies may start at one element (column-pair halos)
      for (size_t i = 0; i < copies.size(); ++i) at_src[copies[i].src].push_back(i);
      std::vector<bool> used(copies.size(), false);
      for (size_t i = 0; i < copies.size(); ++i) {
        if (used[i]) continue;
        std::vector<size_t> parts{i};
        for (int64_t k = 1; k < copy_stride && static_cast<int64_t>(parts.size()) == k; ++k) {
          const auto found = at_src.find(copies[i].src + k);
          for (size_t j = 0; found != at_src.end() && j < found->second.size(); ++j) {
            const size_t m = found->second[j];
            if (!used[m] && copies[m].n == copies[i].n) { parts.push_back(m); break; }
          }
        }
        if (static_cast<int64_t>(parts.size()) < copy_stride) continue;
        SplitCopy split{copies[i].src, copies[i].n, {}};
        for (int64_t k = 0; k < copy_stride; ++k) {
          split.dst[k] = copies[parts[k]].dst;
          used[parts[k]] = true;
        }
        splits.push_back(split);
      }
      std::vector<RowCopy> rest;
      for (size_t i = 0; i < copies.size(); ++i) if (!used[i]) rest.push_back(copies[i]);
      copies = std::move(rest);
    }
    int64_t n = 0;
    for (const auto& r : copies) n += r.n;
    if (n >= kShortRow * static_cast<int64_t>(copies.size())) return;
    // rows all of one length, then under kShortRow as their average is: the stock kernel's rows on maps under 12 wide
    const bool same = std::all_of(copies.begin(), copies.end(), [&](const RowCopy& r) { return r.n == copies[0].n; });
    if (copy_stride == 1 && same) {
      short_len = copies[0].n;
      return;
    }
    for (const auto& r : copies) for (int64_t j = 0; j < r.n; ++j) {
      table_dst.push_back(static_cast<int32_t>(r.dst + j));
      table_src.push_back(static_cast<int32_t>(r.src + j * copy_stride));
    }
    copies.clear();  // the table holds them now
  }
  // The mask (index into masks) of an edge tap: ones on the grid positions of output rows [r0, r1) but column skip,
  // zeros elsewhere (the margin included)
  size_t mask_of(int64_t r0, int64_t r1, int64_t skip) {
    const std::vector<int64_t> key{r0, r1, skip};
    for (size_t i = 0; i < mask_keys.size(); ++i) if (mask_keys[i] == key) return i;
    std::vector<uint32_t> m(grid_len(), 0u);
    for (int64_t q = 0; q < olen; ++q) {
      const int64_t row = q % F / PC;
      if (row >= r0 && row < r1 && q % PC != skip) m[margin + q] = ~0u;
    }
    mask_keys.push_back(key);
    masks.push_back(std::move(m));
    return masks.size() - 1;
  }
  int64_t phases_len() const { return in_margin + sh * sw * plen + kBlock; }  // room for a block's reads
  int64_t grid_len() const { return margin + blocks(olen) + plen + kBlock; }
  // The grid span from the first frame's first output to the last frame's last (junk rows between frames included:
  // one long loop is faster than a loop per frame)
  int64_t output_span(int64_t T) const { return (T - 1) * F + out_rows * PC; }
};

// A row copy between the frame (every sw-th element) and a phase row (contiguous), the stride a constant where it is
// 1, 2 or 4 (so they vectorize)
template <int64_t kStride, bool kAdd>
inline void strided_row(float* __restrict row, float* __restrict phase_row, int64_t n, int64_t stride) {
  const int64_t sw = kStride > 0 ? kStride : stride;
  for (int64_t j = 0; j < n; ++j) {
    if (kAdd) row[j * sw] += phase_row[j];
    else phase_row[j] = row[j * sw];
  }
}

template <bool kAdd>
inline void row_copy(float* row, float* phase_row, int64_t n, int64_t sw) {
  if (sw == 1) strided_row<1, kAdd>(row, phase_row, n, sw);
  else if (sw == 2) strided_row<2, kAdd>(row, phase_row, n, sw);
  else if (sw == 4) strided_row<4, kAdd>(row, phase_row, n, sw);
  else strided_row<0, kAdd>(row, phase_row, n, sw);
}

// Vectors of L floats and the shuffles of a split: the even and odd elements of a pair of vectors, and back
typedef float vf8 __attribute__((vector_size(32), aligned(4), may_alias));
typedef float vf4 __attribute__((vector_size(16), aligned(4), may_alias));
typedef float vf16 __attribute__((vector_size(64), aligned(4), may_alias));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef int32_t vi4 __attribute__((vector_size(16)));
template <int L> struct LaneTypes;
template <> struct LaneTypes<16> { typedef vf16 v; typedef vi16 index; };
template <> struct LaneTypes<8> { typedef vf8 v; typedef vi8 index; };
template <> struct LaneTypes<4> { typedef vf4 v; typedef vi4 index; };

template <int L> struct Lanes {
  typedef typename LaneTypes<L>::v v;
  typedef typename LaneTypes<L>::index index;
  static v load(const float* p) { return *reinterpret_cast<const v*>(p); }
  static void store(float* p, v x) { *reinterpret_cast<v*>(p) = x; }
  static index mask(int32_t first, int32_t step, bool zip) {  // zip: first, first + L, first + 1, first + 1 + L...
    index m;
    for (int32_t i = 0; i < L; ++i) m[i] = zip ? first + i / 2 + (i % 2) * L : first + step * i;
    return m;
  }
  static void unzip(v a, v b, v& even, v& odd) {
    even = __builtin_shuffle(a, b, mask(0, 2, false));
    odd = __builtin_shuffle(a, b, mask(1, 2, false));
  }
  static void zip(v even, v odd, v& a, v& b) {
    a = __builtin_shuffle(even, odd, mask(0, 0, true));
    b = __builtin_shuffle(even, odd, mask(L / 2, 0, true));
  }
};

// Outputs j in [j, j + L) of a split of K (2 or 4): row[K j + k] -> dst[k][j], or with kAdd row[K j + k] += dst[k][j]
template <int L, int K, bool kAdd>
inline void split_step(float* row, float* const* dst, int64_t j) {
  using V = Lanes<L>;
  typename V::v x[K], y[K];
  float* r = row + K * j;
  if (!kAdd) {
    for (int k = 0; k < K; ++k) x[k] = V::load(r + k * L);
    if (K == 2) {
      V::unzip(x[0], x[1], y[0], y[1]);
    } else {  // (0, 2, 4...) and (1, 3, 5...) of each half, then those split again: 0 mod 4, 2 mod 4, 1 mod 4, 3 mod 4
      typename V::v e0, o0, e1, o1;
      V::unzip(x[0], x[1], e0, o0);
      V::unzip(x[2], x[3], e1, o1);
      V::unzip(e0, e1, y[0], y[2]);
      V::unzip(o0, o1, y[1], y[3]);
    }
    for (int k = 0; k < K; ++k) V::store(dst[k] + j, y[k]);
  } else {
    for (int k = 0; k < K; ++k) y[k] = V::load(dst[k] + j);
    if (K == 2) {
      V::zip(y[0], y[1], x[0], x[1]);
    } else {
      typename V::v e0, o0, e1, o1;
      V::zip(y[0], y[2], e0, e1);
      V::zip(y[1], y[3], o0, o1);
      V::zip(e0, o0, x[0], x[1]);
      V::zip(e1, o1, x[2], x[3]);
    }
    for (int k = 0; k < K; ++k) V::store(r + k * L, V::load(r + k * L) + x[k]);
  }
}

template <int K, bool kAdd>
void split_copy(float* row, float* const* dst, int64_t n) {
  int64_t j = 0;
  if (kLanes == 16) for (; j + 16 <= n; j += 16) split_step<16, K, kAdd>(row, dst, j);
  for (; j + 8 <= n; j += 8) split_step<8, K, kAdd>(row, dst, j);
  if (j + 4 <= n) { split_step<4, K, kAdd>(row, dst, j); j += 4; }
  for (; j < n; ++j) for (int k = 0; k < K; ++k) {
    if (kAdd) row[K * j + k] += dst[k][j];
    else dst[k][j] = row[K * j + k];
  }
}

// Row copies of N contiguous elements, N a compile-time constant (a few vector moves per row; a loop of a runtime
// length cost more per row than its copying on small maps, and an element table four memory operations per element)
template <int64_t N, bool kAdd>
void short_rows(float* frame, float* phase, const std::vector<Branch::RowCopy>& rows) {
  for (const auto& r : rows) {
    float* __restrict f = frame + r.src;
    float* __restrict p = phase + r.dst;
    for (int64_t j = 0; j < N; ++j) {
      if (kAdd) f[j] += p[j];
      else p[j] = f[j];
    }
  }
}

// short_rows<n> for a length n in [1, N]
template <int64_t N, bool kAdd>
void short_rows_of(int64_t n, float* frame, float* phase, const std::vector<Branch::RowCopy>& rows) {
  if constexpr (N > 0) {
    if (n == N) short_rows<N, kAdd>(frame, phase, rows);
    else short_rows_of<N - 1, kAdd>(n, frame, phase, rows);
  }
}

// kAdd false: src (T frames of rows x cols, contiguous) -> the phases' unpadded part (their padding stays zero);
// kAdd true: the frames += the phases' unpadded part
template <bool kAdd>
void phase_copy(float* frames, float* P, const Branch& b, int64_t T) {
  if (b.frame_copy) {
    const int64_t n = b.rows * b.cols;
    for (int64_t t = 0; t < T; ++t) {
      float* __restrict frame = frames + t * n;
      float* __restrict phase_frame = P + (t + b.pt) * b.F + b.ph * b.PC;
      if (kAdd) for (int64_t i = 0; i < n; ++i) frame[i] += phase_frame[i];
      else std::memcpy(phase_frame, frame, n * sizeof(float));
    }
    return;
  }
  const int64_t n = b.table_dst.size();
  const int32_t* __restrict dst = b.table_dst.data();
  const int32_t* __restrict src = b.table_src.data();
  for (int64_t t = 0; t < T; ++t) {
    float* frame = frames + t * b.frame_len;
    float* phase = P + t * b.F;
    if (b.short_len) {
      short_rows_of<kShortRow - 1, kAdd>(b.short_len, frame, phase, b.copies);
      continue;
    }
    for (const auto& c : b.splits) {
      float* to[4] = {phase + c.dst[0], phase + c.dst[1], phase + c.dst[2], phase + c.dst[3]};
      if (b.copy_stride == 2) split_copy<2, kAdd>(frame + c.src, to, c.n);
      else split_copy<4, kAdd>(frame + c.src, to, c.n);
    }
    for (int64_t i = 0; i < n; ++i) {  // (column pairs: a halo element twice, so no vectorized add)
      if (kAdd) frame[src[i]] += phase[dst[i]];
      else phase[dst[i]] = frame[src[i]];
    }
    for (const auto& r : b.copies) row_copy<kAdd>(frame + r.src, phase + r.dst, r.n, b.copy_stride);
  }
}

void to_phases(const float* src, float* P, const Branch& b, int64_t T) {
  phase_copy<false>(const_cast<float*>(src), P, b, T);  // only read
}

void add_from_phases(const float* P, float* dst, const Branch& b, int64_t T) {
  phase_copy<true>(dst, const_cast<float*>(P), b, T);  // only read
}

// The taps of one gather: full taps (offsets at, weights w) and masked ones (offsets mat, weights mw, mask pointers
// offset so that mask[q] goes with output q). The weights and mask pointers change per call, in buffers kept by the
// thread (allocating them cost more than a small plane's taps).
struct TapSet {
  const int64_t* at = nullptr;
  const int64_t* mat = nullptr;
  int64_t K = 0, Km = 0;
  std::vector<float> w, mw;
  std::vector<const uint32_t*> mask;
};

// O[q] = sum_k w[k] * S[at[k] + q] (+ the masked taps, their reads cleared where the mask is 0) for q < n rounded
// up to kLanes (S, O and the masks have room), the sums in registers
void gather_taps(const float* S, const TapSet& ts, float* O, int64_t n) {
  const int64_t K = ts.K, Km = ts.Km;
  const int64_t* at = ts.at;
  const float* w = ts.w.data();
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
    for (int64_t k = 0; k < Km; ++k) {
      const float* p = S + ts.mat[k] + q;
      const uint32_t* m = ts.mask[k] + q;
      const vf wk = ts.mw[k] + vf{};
      a0 += wk * masked(p, m);
      a1 += wk * masked(p + kLanes, m + kLanes);
      a2 += wk * masked(p + 2 * kLanes, m + 2 * kLanes);
      a3 += wk * masked(p + 3 * kLanes, m + 3 * kLanes);
    }
    store(O + q, a0); store(O + q + kLanes, a1); store(O + q + 2 * kLanes, a2); store(O + q + 3 * kLanes, a3);
  }
  for (; q < n; q += kLanes) {
    vf a = {};
    for (int64_t k = 0; k < K; ++k) a += (w[k] + vf{}) * load(S + at[k] + q);
    for (int64_t k = 0; k < Km; ++k) a += (ts.mw[k] + vf{}) * masked(S + ts.mat[k] + q, ts.mask[k] + q);
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

// sum_q G[q] (S[at[k] + q] where mask_k[q] is set) for q < n rounded up to kLanes, added to gw[col[k]], kTaps
// taps at once
template <int64_t kTaps>
void masked_dot_block(const float* G, const float* S, const int64_t* at, const uint32_t* const* mask,
                      const int64_t* col, int64_t n, float* gw) {
  vf acc[kTaps] = {};
  for (int64_t q = 0; q < n; q += kLanes) {
#pragma GCC unroll 4
    for (int64_t k = 0; k < kTaps; ++k) acc[k] += load(G + q) * masked(S + at[k] + q, mask[k] + q);
  }
  for (int64_t k = 0; k < kTaps; ++k) {
    float s = 0.f;
    for (int64_t l = 0; l < kLanes; ++l) s += acc[k][l];
    gw[col[k]] += s;
  }
}

// The grid position where an edge tap's rows start in frame t
inline int64_t edge_start(const Branch& b, const EdgeTap& e, int64_t t) { return t * b.F + e.r0 * b.PC; }

// O = sum_k w[col_k] * P[at_k + q] over the output grid
void stencil(const float* P, const float* w, const Branch& b, int64_t T, float* O, TapSet& ts) {
  ts.at = b.tap_at.data();
  ts.K = b.tap_at.size();
  ts.w.resize(ts.K);
  for (int64_t k = 0; k < ts.K; ++k) ts.w[k] = w[b.tap_col[k]];
  ts.mat = b.mtap_at.data();
  ts.Km = b.mtap_at.size();
  ts.mw.resize(ts.Km);
  ts.mask.resize(ts.Km);
  for (int64_t k = 0; k < ts.Km; ++k) {
    ts.mw[k] = w[b.mtap_col[k]];
    ts.mask[k] = b.masks[b.mtap_mask[k]].data() + b.margin;
  }
  gather_taps(P, ts, O, b.output_span(T));
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
void stencil_transposed(const float* G, const float* w, const Branch& b, int64_t T, float* GP, TapSet& ts) {
  // Rows of a phase frame that hold input: without a row stride [ph, ph + rows), else all of them
  const int64_t first = b.sh == 1 ? b.ph * b.PC : 0, span = b.sh == 1 ? b.rows * b.PC : b.F;
  for (int64_t ph = 0; ph < b.sh * b.sw; ++ph) {
    const auto& taps = b.phase_taps[ph];
    ts.at = taps.at.data();
    ts.K = taps.at.size();
    ts.w.resize(ts.K);
    for (int64_t k = 0; k < ts.K; ++k) ts.w[k] = w[taps.col[k]];
    const int64_t m = ph * b.plen + b.pt * b.F + first, n = (T - 1) * b.F + span;
    ts.mat = taps.mat.data();  // masked taps exist only without strides: in the one phase
    ts.Km = taps.mat.size();
    ts.mw.resize(ts.Km);
    ts.mask.resize(ts.Km);
    for (int64_t k = 0; k < ts.Km; ++k) {  // GP[m + q] += w G[m + q - a] where the mask at output m + q - a is set
      ts.mw[k] = w[b.mtap_col[k]];
      ts.mask[k] = b.masks[b.mtap_mask[k]].data() + b.margin + m - b.mtap_at[k];
    }
    if (ts.K + ts.Km == 0) std::fill(GP + m, GP + m + n, 0.f);
    else gather_taps(G + (m - ph * b.plen), ts, GP + m, n);
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
void weight_grad(const float* G, const float* P, const Branch& b, int64_t T, float* gw, TapSet& ts) {
  dot_taps(G, P, b.tap_at.data(), b.tap_col.data(), b.tap_at.size(), b.output_span(T), gw);
  const int64_t n = b.output_span(T), Km = b.mtap_at.size();  // G is zero beyond it, up to the register
  const int64_t* at = b.mtap_at.data();
  const int64_t* col = b.mtap_col.data();
  ts.mask.resize(Km);
  for (int64_t k = 0; k < Km; ++k) ts.mask[k] = b.masks[b.mtap_mask[k]].data() + b.margin;
  int64_t k = 0;
  for (; k + 4 <= Km; k += 4) masked_dot_block<4>(G, P, at + k, ts.mask.data() + k, col + k, n, gw);
  for (; k < Km; ++k) masked_dot_block<1>(G, P, at + k, ts.mask.data() + k, col + k, n, gw);
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

// The channels taken from the groups in turn (c0, c0', c0 + 1, c0' + 1, ...), so that each thread's contiguous share
// of parallel_for holds every group in proportion. The groups' costs differ (the faithful STS static half at stride 2
// runs three branches, the dynamic half one); in channel order one thread got the whole static half and the other
// waited (measured: X3D-S's faithful stride-2 layers ran 1.02-1.20x faster interleaved).
std::vector<int64_t> interleaved_channels(const std::vector<Group>& groups, int64_t C) {
  std::vector<int64_t> order, next;
  for (const auto& g : groups) next.push_back(g.c0);
  while (static_cast<int64_t>(order.size()) < C) {
    const size_t before = order.size();
    for (size_t i = 0; i < groups.size(); ++i) if (next[i] < groups[i].c1) order.push_back(next[i]++);
    TORCH_CHECK(order.size() > before, "depthwise stencil: the groups do not cover the ", C, " channels");
  }
  return order;
}

// A layer shape's plan: its groups, and the channels in the order the threads take them, each with its group
struct Layer {
  std::vector<Group> groups;
  std::vector<int64_t> order;
  std::vector<const Group*> group;  // of order[i]

  Layer(const Layer&) = delete;  // group points into groups

  Layer(std::vector<Group> groups_, int64_t C) : groups(std::move(groups_)), order(interleaved_channels(groups, C)) {
    for (const int64_t c : order) group.push_back(&group_of(groups, c));
  }
};

// The plan of a layer shape, built once: a call's branches (index maps, masks) cost up to a tenth of a small
// layer's time to build. Keyed by everything it is built from; a network has a few dozen layer shapes.
std::shared_ptr<const Layer> cached_layer(const std::vector<int64_t>& bounds, const std::vector<int64_t>& specs,
                                          int64_t T, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  static std::mutex lock;
  static std::map<std::vector<int64_t>, std::shared_ptr<const Layer>> cache;
  std::vector<int64_t> key{T, H, W, Ho, Wo, static_cast<int64_t>(bounds.size())};
  key.insert(key.end(), bounds.begin(), bounds.end());
  key.insert(key.end(), specs.begin(), specs.end());
  {
    std::lock_guard<std::mutex> guard(lock);
    const auto found = cache.find(key);
    if (found != cache.end()) return found->second;
  }
  auto layer = std::make_shared<const Layer>(make_groups(bounds, specs, T, H, W, Ho, Wo), bounds.back());
  std::lock_guard<std::mutex> guard(lock);
  if (cache.size() >= 256) cache.clear();  // a bound for programs that run many shapes (masks are ~1 MB at 56x56)
  return cache.emplace(std::move(key), std::move(layer)).first->second;
}

// One thread's buffers. Per branch, the input phases and the output-gradient grid keep their padding and junk
// positions zero from plane to plane (only the valid positions are written), so they are cleared once; the others
// are written before they are read, and the transposed planes exist only where a branch reads the transpose.
struct Scratch {
  TapSet taps;
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

// This thread's Scratch for a layer shape and direction, kept from call to call: building one allocates and clears
// every branch's buffers (hundreds of KB per thread on the larger maps), a cost that grows with the branch count, so
// the STS static half paid it up to three times. Kept buffers stay valid: the same layer means the same branches,
// whose zero positions are never written. An entry is rebuilt once its layer is gone from cached_layer (its weak
// pointer has expired, whatever the address of the new one).
Scratch& thread_scratch(const std::shared_ptr<const Layer>& layer, int64_t plane_len, bool backward) {
  struct Entry {
    const Layer* key;
    bool backward;
    std::weak_ptr<const Layer> alive;
    std::unique_ptr<Scratch> scratch;
  };
  thread_local std::vector<Entry> kept;
  for (auto& e : kept) {
    if (e.key == layer.get() && e.backward == backward && !e.alive.expired()) return *e.scratch;
  }
  kept.erase(std::remove_if(kept.begin(), kept.end(), [](const Entry& e) { return e.alive.expired(); }), kept.end());
  if (kept.size() >= 64) kept.erase(kept.begin());  // a bound, as for cached_layer
  kept.push_back({layer.get(), backward, layer, std::make_unique<Scratch>(layer->groups, plane_len, backward)});
  return *kept.back().scratch;
}

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

// bounds, checked to split the C channels into groups (the first 0, increasing, the last C)
const std::vector<int64_t>& checked_bounds(const std::vector<int64_t>& bounds, int64_t C) {
  TORCH_CHECK(bounds.size() >= 2 && bounds.front() == 0 && bounds.back() == C &&
                  std::is_sorted(bounds.begin(), bounds.end()),
              "depthwise stencil: bounds must run from 0 to the ", C, " channels");
  return bounds;
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
  const auto layer = cached_layer(checked_bounds(bounds, C), specs, T, H, W, Ho, Wo);
  auto out = at::empty({N, C, T, Ho, Wo}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, N * C, 1, [&](int64_t begin, int64_t end) {
    Scratch& scratch = thread_scratch(layer, T * H * W, false);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t c = layer->order[i % C], nc = i / C * C + c;
      const float* src = xp + nc * T * H * W;
      float* dst = op + nc * T * Ho * Wo;
      const Group& g = *layer->group[i % C];
      bool transposed = false;
      for (size_t bi = 0; bi < g.branches.size(); ++bi) {
        const Branch& b = g.branches[bi];
        if (b.transpose_in && !transposed) {
          transpose_frames<false>(src, scratch.plane.get(), T, H, W);
          transposed = true;
        }
        float* P = scratch.phases[b.id].data() + b.in_margin;
        to_phases(b.transpose_in ? scratch.plane.get() : src, P, b, T);
        stencil(P, wp + c * K, b, T, scratch.grid.get(), scratch.taps);
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
  const auto layer = cached_layer(checked_bounds(bounds, C), specs, T, H, W, Ho, Wo);
  at::Tensor gx = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor gw = need_w ? at::zeros_like(weight) : at::Tensor();
  const float* xp = x.data_ptr<float>();
  const float* wp = weight.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  float* gxp = need_x ? gx.data_ptr<float>() : nullptr;
  float* gwp = need_w ? gw.data_ptr<float>() : nullptr;
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    Scratch& scratch = thread_scratch(layer, T * H * W, true);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t c = layer->order[i];
      const Group& g = *layer->group[i];
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
            float* P = scratch.phases[b.id].data() + b.in_margin;
            to_phases(b.transpose_in ? scratch.plane.get() : src, P, b, T);
            weight_grad(G, P, b, T, gwp + c * K, scratch.taps);
          }
          if (need_x) {
            stencil_transposed(G, wp + c * K, b, T, scratch.grad_phases.get(), scratch.taps);
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
