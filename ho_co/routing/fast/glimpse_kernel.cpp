// The pointer's glimpse attention on CPU, for MatNet's few keys and narrow heads.
//
// softmax(q k^T * scale + mask) v for each (instance, head), with N keys (the nodes, ~50) and a
// head width d of 8-64 (16 at MatNet's sizes). aten's CPU flash-attention kernel tiles for long
// sequences and wide heads; here each (instance, head) keeps K^T, V^T and the rows of K and V in
// cache, and query rows go RB at a time through register-blocked loops (each key table load
// serves RB rows; the dK and dV rows are read and written once per RB rows). Forward returns the
// log-sum-exp of each row for the backward, as flash attention does; the backward recomputes the
// probabilities from it. Sums run in float in another order than aten's kernels: results match
// them to float rounding, not bit for bit.
//
// q, out: [B, H, S, d] and k, v: [B, H, N, d], any strides with unit stride over d (the pointer's
// tensors are views of [B, S, H * d]); mask: additive float [B, 1, S, N] (0 or -inf), unit stride
// over N. out and dq are laid out [B, S, H, d]; dk and dv contiguous; lse [B, H, S]. Work is split
// over (instance, head) with at::parallel_for; each task owns its rows of dk and dv, so results do
// not depend on the thread count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"

namespace {

constexpr int64_t kMaxKeys = 1024;
constexpr int RB = 6;  // query rows per block: 6 x 2 accumulator vectors fit AVX2's 16 registers
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

using ho_co::load8;
using ho_co::splat;
using ho_co::store8;
using ho_co::vf8;
using ho_co::vi8;

// exp(x) for x <= 0; exactly 0 below -87 (masked keys are -inf), as aten's softmax gives there
__attribute__((always_inline)) inline float exp_le0(float x) {
  const bool underflow = !(x >= -87.0f);  // also -inf and NaN
  const float p = ho_co::exp_from_m87(underflow ? -87.0f : x);
  return underflow ? 0.0f : p;
}

struct View4 {  // a [B, H, R, d] float tensor with unit stride over d; rows found through its strides
  float* p;
  int64_t sb, sh, sr;
  explicit View4(const at::Tensor& t) : p(t.data_ptr<float>()), sb(t.stride(0)), sh(t.stride(1)), sr(t.stride(2)) {
    TORCH_CHECK(t.stride(3) == 1, "glimpse attention: tensors need unit stride over the head width");
  }
  float* row(int64_t b, int64_t h, int64_t r) const { return p + b * sb + h * sh + r * sr; }
};

// one (instance, head)'s rows of k as a [D, Np] table (row j in column j), zero-padded to Np
template <int D>
void columns(const View4& k, int64_t b, int64_t h, int64_t N, int64_t Np, float* t) {
  std::fill(t, t + D * Np, 0.0f);
  for (int64_t j = 0; j < N; ++j) {
    const float* kj = k.row(b, h, j);
    for (int c = 0; c < D; ++c) t[c * Np + j] = kj[c];
  }
}

// one (instance, head)'s rows of k, contiguous [N, D]
template <int D>
void rows(const View4& k, int64_t b, int64_t h, int64_t N, float* t) {
  for (int64_t j = 0; j < N; ++j) std::memcpy(t + j * D, k.row(b, h, j), D * sizeof(float));
}

// R rows of scores, packed at the row length Np: rows kMaxKeys apart would sit 4 KiB apart,
// in the same L1 cache sets
struct Rows {
  float* p;
  int64_t ld;
  float* operator[](int64_t i) const { return p + i * ld; }
};

// out[i][j] = sum_c x[i][c] table[c, j] for R rows x[i] and the Np columns of a [D, Np] table:
// every table vector loaded once serves the R rows, every broadcast x[i][c] two vectors of
// columns where two are left (R x 2 accumulators; with R = 6 they, two table vectors and the
// broadcast fit AVX2's 16 registers: 8 rows spilled, and ran 15-20% slower)
template <int D, int R, int W>
inline void dot_column_vectors(const float* const* x, const float* table, int64_t Np, int64_t j0,
                               Rows out) {
  vf8 acc[R][W];
  for (int i = 0; i < R; ++i)
    for (int w = 0; w < W; ++w) acc[i][w] = vf8{};
  for (int c = 0; c < D; ++c) {
    vf8 t[W];
    for (int w = 0; w < W; ++w) t[w] = load8(table + c * Np + j0 + 8 * w);
    for (int i = 0; i < R; ++i) {
      const vf8 xc = splat(x[i][c]);
      for (int w = 0; w < W; ++w) acc[i][w] += xc * t[w];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int w = 0; w < W; ++w) store8(out[i] + j0 + 8 * w, acc[i][w]);
}

template <int D, int R>
inline void dot_columns(const float* const* x, const float* table, int64_t Np, Rows out) {
  int64_t j0 = 0;
  for (; j0 + 16 <= Np; j0 += 16) dot_column_vectors<D, R, 2>(x, table, Np, j0, out);
  if (j0 < Np) dot_column_vectors<D, R, 1>(x, table, Np, j0, out);
}

// out[i] = sum_j w[i][j] rows[j, :] for R weight rows over the N rows of a [N, D] table
template <int D, int R>
inline void weighted_rows(Rows w, const float* table, int64_t N, float (*out)[D]) {
  constexpr int NV = D / 8;
  vf8 acc[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = vf8{};
  for (int64_t j = 0; j < N; ++j) {
    vf8 t[NV];
    for (int v = 0; v < NV; ++v) t[v] = load8(table + j * D + 8 * v);
    for (int i = 0; i < R; ++i) {
      const vf8 wij = splat(w[i][j]);
      for (int v = 0; v < NV; ++v) acc[i][v] += wij * t[v];
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) store8(out[i] + 8 * v, acc[i][v]);
}

// table[j, :] += sum_i w[i][j] x[i] for the N rows of a [N, D] table (each row read and written once)
template <int D, int R>
inline void add_outer(Rows w, const float* const* x, int64_t N, float* table) {
  constexpr int NV = D / 8;
  vf8 xv[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) xv[i][v] = load8(x[i] + 8 * v);
  for (int64_t j = 0; j < N; ++j) {
    vf8 t[NV];
    for (int v = 0; v < NV; ++v) t[v] = load8(table + j * D + 8 * v);
    for (int i = 0; i < R; ++i) {
      const vf8 wij = splat(w[i][j]);
      for (int v = 0; v < NV; ++v) t[v] += wij * xv[i][v];
    }
    for (int v = 0; v < NV; ++v) store8(table + j * D + 8 * v, t[v]);
  }
}

// s = s * scale + mask over the N keys, -inf over the padding
inline void mask_scores(float* s, const float* m, float scale, int64_t N, int64_t Np) {
  for (int64_t j = 0; j < N; ++j) s[j] = s[j] * scale + m[j];
  for (int64_t j = N; j < Np; ++j) s[j] = kNegInf;
}

inline float row_max(const float* s, int64_t Np) {
  float part[8];
  for (int l = 0; l < 8; ++l) part[l] = s[l];
  for (int64_t j = 8; j < Np; j += 8)
    for (int l = 0; l < 8; ++l) part[l] = part[l] > s[j + l] ? part[l] : s[j + l];
  float top = part[0];
  for (int l = 1; l < 8; ++l) top = std::max(top, part[l]);
  return top;
}

// exp(x) for x <= 0 on eight lanes, as exp_le0 does each
inline vf8 exp_le0(vf8 x) {
  const vi8 in_range = x >= -87.0f;  // false for -inf and NaN too
  return ho_co::where(in_range, ho_co::exp_from_m87(ho_co::select(in_range, x, splat(-87.0f))));
}

// s[j] = exp(s[j] - shift) in place over the padded row; returns their sum (eight partial
// sums, then in order)
inline float exp_shifted(float* s, float shift, int64_t Np) {
  vf8 part{};
  for (int64_t j = 0; j < Np; j += 8) {
    const vf8 e = exp_le0(load8(s + j) - shift);
    store8(s + j, e);
    part += e;
  }
  float total = 0.0f;
  for (int l = 0; l < 8; ++l) total += part[l];
  return total;
}

struct Task {  // one (instance, head) and the shapes: S query rows, N keys (Np padded to 8)
  int64_t b, h, S, N, Np, h_count;
};

// rows r0 .. r0 + R - 1 of the output from their masked scores s (overwritten): each row's
// softmax, its log-sum-exp into lse, and the softmax-weighted sum of the values (vr, [N, D])
template <int D, int R>
void softmax_rows(const Task& t, int64_t r0, Rows s, const View4& O, float* lse, const float* vr) {
  alignas(64) float o[R][D];
  float total[R];
  for (int i = 0; i < R; ++i) {
    const float top = row_max(s[i], t.Np);
    if (top == kNegInf) {  // every key masked: no glimpse
      std::fill(s[i], s[i] + t.Np, 0.0f);
      total[i] = 0.0f;
      lse[r0 + i] = kNegInf;
      continue;
    }
    total[i] = exp_shifted(s[i], top, t.Np);
    lse[r0 + i] = top + std::log(total[i]);
  }
  weighted_rows<D, R>(s, vr, t.N, o);
  for (int i = 0; i < R; ++i) {
    const float inv = total[i] > 0.0f ? 1.0f / total[i] : 0.0f;
    float* out = O.row(t.b, t.h, r0 + i);
    for (int c = 0; c < D; ++c) out[c] = o[i][c] * inv;
  }
}

template <int D, int R>
void forward_block(const Task& t, int64_t r0, const View4& Q, const View4& O, const float* mask, int64_t ms,
                   float* lse, float scale, const float* kt, const float* vr) {
  alignas(64) float s_buf[R * kMaxKeys];
  const Rows s{s_buf, t.Np};
  const float* q[R];
  for (int i = 0; i < R; ++i) q[i] = Q.row(t.b, t.h, r0 + i);
  dot_columns<D, R>(q, kt, t.Np, s);
  for (int i = 0; i < R; ++i) mask_scores(s[i], mask + (r0 + i) * ms, scale, t.N, t.Np);
  softmax_rows<D, R>(t, r0, s, O, lse, vr);
}

template <int D>
void forward_task(const Task& t, const View4& Q, const View4& K, const View4& V, const View4& O, const float* mask,
                  int64_t ms, float* lse, float scale, float* kt, float* vr) {
  columns<D>(K, t.b, t.h, t.N, t.Np, kt);
  rows<D>(V, t.b, t.h, t.N, vr);
  int64_t r0 = 0;
  for (; r0 + RB <= t.S; r0 += RB) forward_block<D, RB>(t, r0, Q, O, mask, ms, lse, scale, kt, vr);
  for (; r0 < t.S; ++r0) forward_block<D, 1>(t, r0, Q, O, mask, ms, lse, scale, kt, vr);
}

struct Grads {
  const View4 &Q, &O, &G, &DQ;
};

// the output-gradient rows g of rows r0 .. r0 + R - 1 and each row's dO . O (delta: the softmax's row term)
template <int D, int R>
void output_grads(const Task& t, int64_t r0, const View4& O, const View4& G, const float** g, float* delta) {
  for (int i = 0; i < R; ++i) {
    g[i] = G.row(t.b, t.h, r0 + i);
    const float* o = O.row(t.b, t.h, r0 + i);
    delta[i] = 0.0f;
    for (int c = 0; c < D; ++c) delta[i] += g[i][c] * o[c];
  }
}

// the shift that turns a row's masked scores into its probabilities, exp(s - shift): its log-sum-exp,
// or +inf for a row with every key masked (lse -inf), whose probabilities are then 0 everywhere
inline float probability_shift(float row_lse) {
  return row_lse == kNegInf ? std::numeric_limits<float>::infinity() : row_lse;
}

template <int D, int R>
void backward_block(const Task& t, int64_t r0, const Grads& a, const float* mask, int64_t ms, const float* lse,
                    int64_t ls, float scale, const float* kt, const float* vt, const float* kr, float* dk, float* dv) {
  alignas(64) float p_buf[R * kMaxKeys], ds_buf[R * kMaxKeys];
  const Rows p{p_buf, t.Np}, ds{ds_buf, t.Np};
  alignas(64) float dq[R][D];
  const float *q[R], *g[R];
  float delta[R];
  output_grads<D, R>(t, r0, a.O, a.G, g, delta);
  for (int i = 0; i < R; ++i) q[i] = a.Q.row(t.b, t.h, r0 + i);
  dot_columns<D, R>(q, kt, t.Np, p);
  dot_columns<D, R>(g, vt, t.Np, ds);  // dP = dO V^T
  for (int i = 0; i < R; ++i) {
    mask_scores(p[i], mask + (r0 + i) * ms, scale, t.N, t.Np);
    const float shift = probability_shift(lse[(r0 + i) * ls]);
    float* pi = p[i];
    float* dsi = ds[i];
    for (int64_t j = 0; j < t.Np; j += 8) {
      const vf8 pj = exp_le0(load8(pi + j) - shift);
      store8(pi + j, pj);
      store8(dsi + j, pj * (load8(dsi + j) - delta[i]) * scale);  // dS, with the scale
    }
  }
  weighted_rows<D, R>(ds, kr, t.N, dq);  // dQ = dS K
  for (int i = 0; i < R; ++i) {
    float* out = a.DQ.row(t.b, t.h, r0 + i);
    for (int c = 0; c < D; ++c) out[c] = dq[i][c];
  }
  add_outer<D, R>(ds, q, t.N, dk);  // dK += dS^T Q
  add_outer<D, R>(p, g, t.N, dv);   // dV += P^T dO
}

template <int D>
void backward_task(const Task& t, const Grads& a, const View4& K, const View4& V, const View4& DK, const View4& DV,
                   const float* mask, int64_t ms, const float* lse, int64_t ls, float scale, float* kt, float* vt,
                   float* kr, float* dk, float* dv) {
  columns<D>(K, t.b, t.h, t.N, t.Np, kt);
  columns<D>(V, t.b, t.h, t.N, t.Np, vt);
  rows<D>(K, t.b, t.h, t.N, kr);
  std::fill(dk, dk + t.N * D, 0.0f);
  std::fill(dv, dv + t.N * D, 0.0f);
  int64_t r0 = 0;
  for (; r0 + RB <= t.S; r0 += RB) backward_block<D, RB>(t, r0, a, mask, ms, lse, ls, scale, kt, vt, kr, dk, dv);
  for (; r0 < t.S; ++r0) backward_block<D, 1>(t, r0, a, mask, ms, lse, ls, scale, kt, vt, kr, dk, dv);
  for (int64_t j = 0; j < t.N; ++j) {
    std::memcpy(DK.row(t.b, t.h, j), dk + j * D, D * sizeof(float));
    std::memcpy(DV.row(t.b, t.h, j), dv + j * D, D * sizeof(float));
  }
}

// Split queries. MatNet's decoder query for a row is q_first[start] + q_cur[node] (the start's and
// the current node's parts), so its scores split too: scale * q . k = sf[start] + sc[node], with
// the tables sf = scale * q_first K^T [S, N] and sc = scale * q_cur K^T [N, N] made once per batch.
// A row's scores are then one add instead of N dot products, and the backward returns the score
// gradients summed per start (dsf) and per node (dsc) instead of a dq per row: autograd takes
// them back through the two small table GEMMs.
//
// sf: [B, H, S, N], sc: [B, H, N, N] contiguous; node: [B, R] int64 (row r's current node); row r
// belongs to start r / (R / S). Rows of one start are consecutive, as the tour pass lays them out.
struct Split {
  const float* sf;
  const float* sc;
  const int64_t* node;
  int64_t starts, per;  // rows per start

  // the start and the node of rows r0 .. r0 + R - 1
  template <int R>
  void locate(const Task& t, int64_t r0, int64_t* start, int64_t* at) const {
    int64_t s = r0 / per, step = r0 - s * per;
    for (int i = 0; i < R; ++i) {
      start[i] = s;
      at[i] = node[t.b * t.S + r0 + i];
      if (++step == per) step = 0, ++s;
    }
  }
  const float* first(const Task& t, int64_t start) const { return sf + ((t.b * t.h_count + t.h) * starts + start) * t.N; }
  const float* cur(const Task& t, int64_t at) const { return sc + ((t.b * t.h_count + t.h) * t.N + at) * t.N; }
};

// s = sf[start] + sc[node] + mask over the N keys, -inf over the padding: the same adds in the
// forward and the backward, so the backward's probabilities are the forward's bit for bit
inline void split_scores(float* s, const float* f, const float* c, const float* m, int64_t N, int64_t Np) {
  for (int64_t j = 0; j < N; ++j) s[j] = (f[j] + c[j]) + m[j];
  for (int64_t j = N; j < Np; ++j) s[j] = kNegInf;
}

template <int D, int R>
void split_forward_block(const Task& t, int64_t r0, const Split& x, const View4& O, const float* mask, int64_t ms,
                         float* lse, const float* vr) {
  alignas(64) float s_buf[R * kMaxKeys];
  const Rows s{s_buf, t.Np};
  int64_t start[R], at[R];
  x.locate<R>(t, r0, start, at);
  for (int i = 0; i < R; ++i) split_scores(s[i], x.first(t, start[i]), x.cur(t, at[i]), mask + (r0 + i) * ms, t.N, t.Np);
  softmax_rows<D, R>(t, r0, s, O, lse, vr);
}

// `next` is the next task's score_cur block ([N, N]) or null. Its rows will be read in node order,
// which the hardware prefetcher cannot guess (random nodes made a rollout step ~1.4x slower than
// sequential ones), so a share of its cache lines is fetched during each block of this task.
template <int D>
void split_forward_task(const Task& t, const Split& x, const View4& V, const View4& O, const float* mask, int64_t ms,
                        float* lse, float* vr, const float* next) {
  rows<D>(V, t.b, t.h, t.N, vr);
  const int64_t lines = (t.N * t.N + 15) / 16, blocks = std::max<int64_t>(1, t.S / RB);
  const int64_t per_block = (lines + blocks - 1) / blocks;
  int64_t fetched = 0;
  int64_t r0 = 0;
  for (; r0 + RB <= t.S; r0 += RB) {
    if (next)
      for (int64_t e = std::min(lines, fetched + per_block); fetched < e; ++fetched) __builtin_prefetch(next + 16 * fetched);
    split_forward_block<D, RB>(t, r0, x, O, mask, ms, lse, vr);
  }
  for (; r0 < t.S; ++r0) split_forward_block<D, 1>(t, r0, x, O, mask, ms, lse, vr);
}

template <int D, int R>
void split_backward_block(const Task& t, int64_t r0, const Split& x, const View4& O, const View4& G,
                          const float* mask, int64_t ms, const float* lse, int64_t ls, const float* vt, float* dsf,
                          float* dsc, float* dv) {
  alignas(64) float p_buf[R * kMaxKeys], ds_buf[R * kMaxKeys];
  const Rows p{p_buf, t.Np}, ds{ds_buf, t.Np};
  const float* g[R];
  float delta[R];
  output_grads<D, R>(t, r0, O, G, g, delta);
  int64_t start[R], at[R];
  x.locate<R>(t, r0, start, at);
  for (int i = 0; i < R; ++i) split_scores(p[i], x.first(t, start[i]), x.cur(t, at[i]), mask + (r0 + i) * ms, t.N, t.Np);
  dot_columns<D, R>(g, vt, t.Np, ds);  // dP = dO V^T
  for (int i = 0; i < R; ++i) {
    const float shift = probability_shift(lse[(r0 + i) * ls]);
    float* pi = p[i];
    float* dsi = ds[i];
    float* f = dsf + start[i] * t.Np;
    float* c = dsc + at[i] * t.Np;
    for (int64_t j = 0; j < t.Np; j += 8) {
      const vf8 pj = exp_le0(load8(pi + j) - shift);
      store8(pi + j, pj);
      const vf8 dsj = pj * (load8(dsi + j) - delta[i]);  // dS
      store8(f + j, load8(f + j) + dsj);
      store8(c + j, load8(c + j) + dsj);
    }
  }
  add_outer<D, R>(p, g, t.N, dv);  // dV += P^T dO
}

template <int D>
void split_backward_task(const Task& t, const Split& x, const View4& V, const View4& O, const View4& G,
                         const float* mask, int64_t ms, const float* lse, int64_t ls, float* dsf_out, float* dsc_out,
                         const View4& DV, float* vt, float* dsf, float* dsc, float* dv) {
  columns<D>(V, t.b, t.h, t.N, t.Np, vt);
  std::fill(dsf, dsf + x.starts * t.Np, 0.0f);
  std::fill(dsc, dsc + t.N * t.Np, 0.0f);
  std::fill(dv, dv + t.N * D, 0.0f);
  int64_t r0 = 0;
  for (; r0 + RB <= t.S; r0 += RB) split_backward_block<D, RB>(t, r0, x, O, G, mask, ms, lse, ls, vt, dsf, dsc, dv);
  for (; r0 < t.S; ++r0) split_backward_block<D, 1>(t, r0, x, O, G, mask, ms, lse, ls, vt, dsf, dsc, dv);
  for (int64_t i = 0; i < x.starts; ++i) std::memcpy(dsf_out + i * t.N, dsf + i * t.Np, t.N * sizeof(float));
  for (int64_t j = 0; j < t.N; ++j) {
    std::memcpy(dsc_out + j * t.N, dsc + j * t.Np, t.N * sizeof(float));
    std::memcpy(DV.row(t.b, t.h, j), dv + j * D, D * sizeof(float));
  }
}

void check(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  for (const auto* t : {&q, &k, &v, &mask}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu() && t->dim() == 4,
                "glimpse attention: 4-d float32 CPU tensors only");
  }
  const int64_t B = q.size(0), H = q.size(1), S = q.size(2), d = q.size(3), N = k.size(2);
  TORCH_CHECK(k.size(0) == B && k.size(1) == H && k.size(3) == d && v.sizes() == k.sizes(),
              "glimpse attention: k and v must be [B, H, N, d] like q [B, H, S, d]");
  TORCH_CHECK(mask.size(0) == B && mask.size(1) == 1 && mask.size(2) == S && mask.size(3) == N && mask.stride(3) == 1,
              "glimpse attention: mask must be [B, 1, S, N] with unit stride over N");
  TORCH_CHECK(N >= 1 && N <= kMaxKeys, "glimpse attention: 1 to ", kMaxKeys, " keys, got ", N);
  TORCH_CHECK(d == 8 || d == 16 || d == 32 || d == 64, "glimpse attention: head width 8, 16, 32 or 64, got ", d);
}

int64_t padded(int64_t n) { return (n + 7) / 8 * 8; }

#define HO_CO_GLIMPSE_WIDTH(d, CALL) \
  switch (d) {                       \
    case 8: CALL(8); break;          \
    case 16: CALL(16); break;        \
    case 32: CALL(32); break;        \
    default: CALL(64); break;        \
  }

std::tuple<at::Tensor, at::Tensor> glimpse_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                   const at::Tensor& mask, double scale) {
  check(q, k, v, mask);
  const int64_t B = q.size(0), H = q.size(1), S = q.size(2), d = q.size(3), N = k.size(2), Np = padded(N);
  auto out = at::empty({B, S, H, d}, q.options()).transpose(1, 2);  // a free reshape to [B, S, H * d]
  auto lse = at::empty({B, H, S}, q.options());
  const View4 Q(q), K(k), V(v), O(out);
  const float* mp = mask.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(d * Np), vr(N * d);
    for (int64_t task = begin; task < end; ++task) {
      const Task t{task / H, task % H, S, N, Np, H};
#define CALL(W) \
  forward_task<W>(t, Q, K, V, O, mp + t.b * mask.stride(0), mask.stride(2), lp + task * S, scale, kt.data(), vr.data())
      HO_CO_GLIMPSE_WIDTH(d, CALL)
#undef CALL
    }
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> glimpse_backward(const at::Tensor& grad_out, const at::Tensor& q,
                                                                const at::Tensor& k, const at::Tensor& v,
                                                                const at::Tensor& mask, const at::Tensor& out,
                                                                const at::Tensor& lse, double scale) {
  check(q, k, v, mask);
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes() && grad_out.scalar_type() == at::kFloat &&
                  out.scalar_type() == at::kFloat,
              "glimpse attention backward: grad_out and out must be float32 like q");
  const int64_t B = q.size(0), H = q.size(1), S = q.size(2), d = q.size(3), N = k.size(2), Np = padded(N);
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == S &&
                  lse.scalar_type() == at::kFloat,
              "glimpse attention backward: lse must be a float32 [B, H, S]");
  auto dq = at::empty({B, S, H, d}, q.options()).transpose(1, 2);
  auto dk = at::empty({B, H, N, d}, k.options());
  auto dv = at::empty({B, H, N, d}, v.options());
  const View4 Q(q), K(k), V(v), O(out), G(grad_out), DQ(dq), DK(dk), DV(dv);
  const Grads a{Q, O, G, DQ};
  const float* mp = mask.data_ptr<float>();
  const float* lp = lse.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> kt(d * Np), vt(d * Np), kr(N * d), dkt(N * d), dvt(N * d);
    for (int64_t task = begin; task < end; ++task) {
      const Task t{task / H, task % H, S, N, Np, H};
#define CALL(W)                                                                                                   \
  backward_task<W>(t, a, K, V, DK, DV, mp + t.b * mask.stride(0), mask.stride(2),                                 \
                   lp + t.b * lse.stride(0) + t.h * lse.stride(1), lse.stride(2), scale, kt.data(), vt.data(),    \
                   kr.data(), dkt.data(), dvt.data())
      HO_CO_GLIMPSE_WIDTH(d, CALL)
#undef CALL
    }
  });
  return {dq, dk, dv};
}

Split check_split(const at::Tensor& sf, const at::Tensor& sc, const at::Tensor& node, const at::Tensor& v,
                  const at::Tensor& mask) {
  for (const auto* t : {&sf, &sc, &v, &mask}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu() && t->dim() == 4,
                "split glimpse attention: 4-d float32 CPU tensors only");
  }
  const int64_t B = v.size(0), H = v.size(1), N = v.size(2), d = v.size(3), S = sf.size(2), R = node.size(1);
  TORCH_CHECK(sf.is_contiguous() && sc.is_contiguous() && sf.size(0) == B && sf.size(1) == H && sf.size(3) == N &&
                  sc.size(0) == B && sc.size(1) == H && sc.size(2) == N && sc.size(3) == N,
              "split glimpse attention: score tables must be contiguous [B, H, S, N] and [B, H, N, N] for values [B, H, N, d]");
  TORCH_CHECK(node.scalar_type() == at::kLong && node.is_contiguous() && node.dim() == 2 && node.size(0) == B &&
                  S >= 1 && R % S == 0,
              "split glimpse attention: node must be contiguous int64 [B, R] with R a multiple of the ", S, " starts");
  TORCH_CHECK(mask.size(0) == B && mask.size(1) == 1 && mask.size(2) == R && mask.size(3) == N && mask.stride(3) == 1,
              "split glimpse attention: mask must be [B, 1, R, N] with unit stride over N");
  TORCH_CHECK(N >= 1 && N <= kMaxKeys, "split glimpse attention: 1 to ", kMaxKeys, " keys, got ", N);
  TORCH_CHECK(d == 8 || d == 16 || d == 32 || d == 64, "split glimpse attention: head width 8, 16, 32 or 64, got ", d);
  if (node.numel() > 0) {
    const auto range = at::aminmax(node);
    TORCH_CHECK(std::get<0>(range).item<int64_t>() >= 0 && std::get<1>(range).item<int64_t>() < N,
                "split glimpse attention: node indices must lie in [0, ", N, ")");
  }
  return Split{sf.data_ptr<float>(), sc.data_ptr<float>(), node.data_ptr<int64_t>(), S, R / S};
}

std::tuple<at::Tensor, at::Tensor> split_glimpse_forward(const at::Tensor& sf, const at::Tensor& sc,
                                                         const at::Tensor& node, const at::Tensor& v,
                                                         const at::Tensor& mask) {
  const Split x = check_split(sf, sc, node, v, mask);
  const int64_t B = v.size(0), H = v.size(1), N = v.size(2), d = v.size(3), R = node.size(1), Np = padded(N);
  auto out = at::empty({B, R, H, d}, v.options()).transpose(1, 2);  // a free reshape to [B, R, H * d]
  auto lse = at::empty({B, H, R}, v.options());
  const View4 V(v), O(out);
  const float* mp = mask.data_ptr<float>();
  float* lp = lse.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> vr(N * d);
    for (int64_t task = begin; task < end; ++task) {
      const Task t{task / H, task % H, R, N, Np, H};
      const float* next = task + 1 < end ? x.sc + (task + 1) * N * N : nullptr;
#define CALL(W) \
  split_forward_task<W>(t, x, V, O, mp + t.b * mask.stride(0), mask.stride(2), lp + task * R, vr.data(), next)
      HO_CO_GLIMPSE_WIDTH(d, CALL)
#undef CALL
    }
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> split_glimpse_backward(const at::Tensor& grad_out, const at::Tensor& sf,
                                                                      const at::Tensor& sc, const at::Tensor& node,
                                                                      const at::Tensor& v, const at::Tensor& mask,
                                                                      const at::Tensor& out, const at::Tensor& lse) {
  const Split x = check_split(sf, sc, node, v, mask);
  const int64_t B = v.size(0), H = v.size(1), N = v.size(2), d = v.size(3), R = node.size(1), Np = padded(N);
  for (const auto* t : {&grad_out, &out}) {
    TORCH_CHECK(t->dim() == 4 && t->size(0) == B && t->size(1) == H && t->size(2) == R && t->size(3) == d &&
                    t->scalar_type() == at::kFloat && t->stride(3) == 1,
                "split glimpse attention backward: grad_out and out must be float32 [B, H, R, d], unit stride over d");
  }
  TORCH_CHECK(lse.dim() == 3 && lse.size(0) == B && lse.size(1) == H && lse.size(2) == R &&
                  lse.scalar_type() == at::kFloat,
              "split glimpse attention backward: lse must be a float32 [B, H, R]");
  auto dsf = at::empty_like(sf), dsc = at::empty_like(sc);
  auto dv = at::empty({B, H, N, d}, v.options());
  const View4 V(v), O(out), G(grad_out), DV(dv);
  const float* mp = mask.data_ptr<float>();
  const float* lp = lse.data_ptr<float>();
  float* dfp = dsf.data_ptr<float>();
  float* dcp = dsc.data_ptr<float>();
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> vt(d * Np), f(x.starts * Np), c(N * Np), dvt(N * d);
    for (int64_t task = begin; task < end; ++task) {
      const Task t{task / H, task % H, R, N, Np, H};
#define CALL(W)                                                                                                \
  split_backward_task<W>(t, x, V, O, G, mp + t.b * mask.stride(0), mask.stride(2),                             \
                         lp + t.b * lse.stride(0) + t.h * lse.stride(1), lse.stride(2), dfp + task * x.starts * N, \
                         dcp + task * N * N, DV, vt.data(), f.data(), c.data(), dvt.data())
      HO_CO_GLIMPSE_WIDTH(d, CALL)
#undef CALL
    }
  });
  return {dsf, dsc, dv};
}

}  // namespace

TORCH_LIBRARY(ho_co_glimpse, m) {
  m.def("glimpse_forward(Tensor q, Tensor k, Tensor v, Tensor mask, float scale) -> (Tensor, Tensor)");
  m.def("glimpse_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor mask, Tensor out, Tensor lse, "
        "float scale) -> (Tensor, Tensor, Tensor)");
  m.def("split_glimpse_forward(Tensor sf, Tensor sc, Tensor node, Tensor v, Tensor mask) -> (Tensor, Tensor)");
  m.def("split_glimpse_backward(Tensor grad_out, Tensor sf, Tensor sc, Tensor node, Tensor v, Tensor mask, "
        "Tensor out, Tensor lse) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ho_co_glimpse, CPU, m) {
  m.impl("glimpse_forward", &glimpse_forward);
  m.impl("glimpse_backward", &glimpse_backward);
  m.impl("split_glimpse_forward", &split_glimpse_forward);
  m.impl("split_glimpse_backward", &split_glimpse_backward);
}
