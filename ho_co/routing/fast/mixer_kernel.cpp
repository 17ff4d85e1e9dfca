// MatNet's mixed-score attention weights on CPU in one sweep: the per-head score MLP and the
// softmax, forward and backward, without the [B, M, H, N, hidden] tensors eager torch builds.
//
// For every head h and score row (b, m), over the columns n:
//   x   = raw[b, h, m, n] / sqrt_d            (the scaled dot product)
//   c   = dmat[b, m, n]                        (the cost the block mixes in)
//   pre = x W1[h, 0, j] + c W1[h, 1, j] + b1[h, j]        for j < hidden
//   s   = sum_j W2[h, j] relu(pre_j) + b2[h]
//   a   = softmax_n(s)                          (what the attention multiplies V with)
// Backward (g = dL/da): ds = a (g - sum_n g a); the hidden pre-activations are recomputed, not
// stored. float32 only; the extension is built for the host CPU.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"

namespace {

// Work goes to threads by (batch, head) unit: one head's weights, its rows in tiles of about
// kTileScores scores. The hidden-unit loops run over a whole tile (many rows, contiguous in
// memory), not over one row's N columns, so their reductions and vector remainders are paid
// once per tile; the per-unit parameter gradients are summed in double, then the units in
// order, so the result does not depend on the thread count.
constexpr int64_t kTileScores = 1024;
constexpr int64_t kMaxCols = 4096;
constexpr int64_t kBuffer = kMaxCols > kTileScores ? kMaxCols : kTileScores;

// the backward's hidden-unit loop is written on eight-float vectors: the compiler does not
// vectorize its four reductions and ReLU select from plain C++
using ho_co::load8;
using ho_co::splat;
using ho_co::store8;
using ho_co::vf8;
using ho_co::vi8;
using ho_co::where;

inline float lane_sum(vf8 v) {
  return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

// exp(x) for the softmax; arguments are <= 0 here (x - max)
inline float exp_le0(float x) { return ho_co::exp_from_m87(std::max(x, -87.0f)); }
inline vf8 exp_le0(vf8 x) { return ho_co::exp_from_m87(ho_co::select(x < -87.0f, splat(-87.0f), x)); }

// Rows per tile: as many whole rows of N scores as fit kTileScores, at least one.
inline int64_t tile_rows(int64_t N) { return std::max<int64_t>(1, kTileScores / N); }

void check_inputs(const at::Tensor& raw, const at::Tensor& dmat, const at::Tensor& w1, const at::Tensor& b1,
                  const at::Tensor& w2, const at::Tensor& b2) {
  TORCH_CHECK(raw.dim() == 4 && dmat.dim() == 3, "mixed scores: raw [B, H, M, N] and dmat [B, M, N]");
  for (const auto* t : {&raw, &dmat, &w1, &b1, &w2, &b2}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat && t->device().is_cpu() && t->is_contiguous(),
                "mixed scores: contiguous float32 CPU tensors only");
  }
  const int64_t H = raw.size(1), J = w1.size(2);
  TORCH_CHECK(dmat.size(0) == raw.size(0) && dmat.size(1) == raw.size(2) && dmat.size(2) == raw.size(3),
              "mixed scores: dmat does not match the score shape");
  TORCH_CHECK(w1.dim() == 3 && w1.size(0) == H && w1.size(1) == 2 && b1.numel() == H * J && w2.numel() == H * J &&
                  b2.numel() == H,
              "mixed scores: one cost matrix per block (W1 [H, 2, hidden], b1 [H, hidden], W2 [H, hidden, 1], b2 [H, 1])");
  TORCH_CHECK(raw.size(3) <= kMaxCols, "mixed scores: at most ", kMaxCols, " columns");
}

at::Tensor mixed_softmax_forward(const at::Tensor& raw, const at::Tensor& dmat, double sqrt_d, const at::Tensor& w1,
                                 const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  check_inputs(raw, dmat, w1, b1, w2, b2);
  const int64_t B = raw.size(0), H = raw.size(1), M = raw.size(2), N = raw.size(3), J = w1.size(2);
  auto out = at::empty_like(raw);
  const float* raw_p = raw.data_ptr<float>();
  const float* dmat_p = dmat.data_ptr<float>();
  const float* w1_p = w1.data_ptr<float>();
  const float* b1_p = b1.data_ptr<float>();
  const float* w2_p = w2.data_ptr<float>();
  const float* b2_p = b2.data_ptr<float>();
  float* out_p = out.data_ptr<float>();
  const float sd = static_cast<float>(sqrt_d);
  const int64_t R = tile_rows(N);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float xb[kBuffer], sb[kBuffer];
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / H, h = unit % H;
      for (int64_t m0 = 0; m0 < M; m0 += R) {
        const int64_t rows = std::min(R, M - m0), P = rows * N;
        const float* __restrict__ r = raw_p + (unit * M + m0) * N;
        const float* __restrict__ c = dmat_p + (b * M + m0) * N;
        float* __restrict__ x = xb;
        float* __restrict__ s = sb;
#pragma omp simd
        for (int64_t p = 0; p < P; ++p) {
          x[p] = r[p] / sd;
          s[p] = 0.0f;
        }
        for (int64_t j = 0; j < J; ++j) {
          const float w0 = w1_p[(h * 2) * J + j], w1c = w1_p[(h * 2 + 1) * J + j];
          const float bj = b1_p[h * J + j], v = w2_p[h * J + j];
#pragma omp simd
          for (int64_t p = 0; p < P; ++p) {
            const float pre = x[p] * w0 + c[p] * w1c + bj;
            s[p] += v * std::max(pre, 0.0f);
          }
        }
        const float bias2 = b2_p[h];
        for (int64_t i = 0; i < rows; ++i) {
          float* __restrict__ si = s + i * N;
          float mx = -std::numeric_limits<float>::infinity();
          for (int64_t n = 0; n < N; ++n) {
            si[n] += bias2;
            mx = std::max(mx, si[n]);
          }
          vf8 part{};  // the exponentials eight at a time (the compiler leaves this loop scalar)
          int64_t n = 0;
          for (; n + 8 <= N; n += 8) {
            const vf8 e = exp_le0(load8(si + n) - mx);
            store8(si + n, e);
            part += e;
          }
          float total = lane_sum(part);
          for (; n < N; ++n) {
            si[n] = exp_le0(si[n] - mx);
            total += si[n];
          }
          float* __restrict__ o = out_p + (unit * M + m0 + i) * N;
          const float inv = 1.0f / total;
          for (int64_t n = 0; n < N; ++n) o[n] = si[n] * inv;
        }
      }
    }
  });
  return out;
}

// -> (grad_raw, grad_w1 [H, 2, J], grad_b1 [H, J], grad_w2 [H, J, 1], grad_b2 [H, 1])
std::vector<at::Tensor> mixed_softmax_backward(const at::Tensor& grad, const at::Tensor& attn, const at::Tensor& raw,
                                               const at::Tensor& dmat, double sqrt_d, const at::Tensor& w1,
                                               const at::Tensor& b1, const at::Tensor& w2, const at::Tensor& b2) {
  check_inputs(raw, dmat, w1, b1, w2, b2);
  TORCH_CHECK(grad.sizes() == raw.sizes() && attn.sizes() == raw.sizes() && grad.is_contiguous() &&
                  attn.is_contiguous() && grad.scalar_type() == at::kFloat,
              "mixed scores backward: contiguous float32 grad and weights of the score shape");
  const int64_t B = raw.size(0), H = raw.size(1), M = raw.size(2), N = raw.size(3), J = w1.size(2);
  const int64_t width = 4 * J + 1;  // per unit: dW1[0, j], dW1[1, j], db1[j], dW2[j], db2
  std::vector<double> partial(static_cast<size_t>(B * H * width), 0.0);
  auto grad_raw = at::empty_like(raw);
  const float* g_p = grad.data_ptr<float>();
  const float* a_p = attn.data_ptr<float>();
  const float* raw_p = raw.data_ptr<float>();
  const float* dmat_p = dmat.data_ptr<float>();
  const float* w1_p = w1.data_ptr<float>();
  const float* b1_p = b1.data_ptr<float>();
  const float* w2_p = w2.data_ptr<float>();
  float* gr_p = grad_raw.data_ptr<float>();
  const float sd = static_cast<float>(sqrt_d);
  const int64_t R = tile_rows(N);
  at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
    alignas(64) float xb[kBuffer + 8], db[kBuffer + 8], dxb[kBuffer + 8], cb[kBuffer + 8];
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t b = unit / H, h = unit % H;
      double* acc = partial.data() + unit * width;
      for (int64_t m0 = 0; m0 < M; m0 += R) {
        const int64_t rows = std::min(R, M - m0), P = rows * N;
        const int64_t first = (unit * M + m0) * N;
        const float* __restrict__ c = dmat_p + (b * M + m0) * N;
        float* __restrict__ x = xb;
        float* __restrict__ ds = db;
        float* __restrict__ dx = dxb;
        float* __restrict__ cc = cb;
        for (int64_t i = 0; i < rows; ++i) {  // softmax backward, row by row: ds = a (g - sum g a)
          const float* __restrict__ g = g_p + first + i * N;
          const float* __restrict__ a = a_p + first + i * N;
          const float* __restrict__ r = raw_p + first + i * N;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t n = 0; n < N; ++n) dot += g[n] * a[n];
          float sum_ds = 0.0f;
#pragma omp simd reduction(+ : sum_ds)
          for (int64_t n = 0; n < N; ++n) {
            const int64_t p = i * N + n;
            ds[p] = a[n] * (g[n] - dot);
            x[p] = r[n] / sd;
            dx[p] = 0.0f;
            sum_ds += ds[p];
          }
          acc[4 * J] += sum_ds;
        }
        const int64_t padded = (P + 7) / 8 * 8;  // zero scores past the tile add exactly 0 below
        for (int64_t p = 0; p < P; ++p) cc[p] = c[p];
        for (int64_t p = P; p < padded; ++p) x[p] = ds[p] = cc[p] = dx[p] = 0.0f;
        for (int64_t j = 0; j < J; ++j) {  // the hidden units, recomputed, over the whole tile
          const vf8 w0 = splat(w1_p[(h * 2) * J + j]), w1c = splat(w1_p[(h * 2 + 1) * J + j]);
          const vf8 bj = splat(b1_p[h * J + j]), v = splat(w2_p[h * J + j]);
          vf8 s_w0 = splat(0.0f), s_w1 = s_w0, s_b1 = s_w0, s_w2 = s_w0;
          for (int64_t p = 0; p < padded; p += 8) {
            const vf8 xp = load8(x + p), cp = load8(cc + p), dsp = load8(ds + p);
            const vf8 pre = xp * w0 + cp * w1c + bj;
            const vi8 on = pre > 0.0f;
            const vf8 t = where(on, dsp * v);
            store8(dx + p, load8(dx + p) + t * w0);
            s_w0 += t * xp;
            s_w1 += t * cp;
            s_b1 += t;
            s_w2 += dsp * where(on, pre);
          }
          acc[j] += lane_sum(s_w0);
          acc[J + j] += lane_sum(s_w1);
          acc[2 * J + j] += lane_sum(s_b1);
          acc[3 * J + j] += lane_sum(s_w2);
        }
        float* __restrict__ out = gr_p + first;
#pragma omp simd
        for (int64_t p = 0; p < P; ++p) out[p] = dx[p] / sd;
      }
    }
  });
  std::vector<double> total(static_cast<size_t>(H * width), 0.0);
  for (int64_t unit = 0; unit < B * H; ++unit) {
    const double* acc = partial.data() + unit * width;
    double* t = total.data() + (unit % H) * width;
    for (int64_t i = 0; i < width; ++i) t[i] += acc[i];
  }
  auto gw1 = at::empty_like(w1), gb1 = at::empty_like(b1), gw2 = at::empty_like(w2), gb2 = at::empty_like(b2);
  float* gw1_p = gw1.data_ptr<float>();
  float* gb1_p = gb1.data_ptr<float>();
  float* gw2_p = gw2.data_ptr<float>();
  float* gb2_p = gb2.data_ptr<float>();
  for (int64_t h = 0; h < H; ++h) {
    const double* t = total.data() + h * width;
    for (int64_t j = 0; j < J; ++j) {
      gw1_p[(h * 2) * J + j] = static_cast<float>(t[j]);
      gw1_p[(h * 2 + 1) * J + j] = static_cast<float>(t[J + j]);
      gb1_p[h * J + j] = static_cast<float>(t[2 * J + j]);
      gw2_p[h * J + j] = static_cast<float>(t[3 * J + j]);
    }
    gb2_p[h] = static_cast<float>(t[4 * J]);
  }
  return {grad_raw, gw1, gb1, gw2, gb2};
}

}  // namespace

TORCH_LIBRARY(ho_co_mixer, m) {
  m.def("mixed_softmax_forward(Tensor raw, Tensor dmat, float sqrt_d, Tensor w1, Tensor b1, Tensor w2, Tensor b2) -> Tensor");
  m.def("mixed_softmax_backward(Tensor grad, Tensor attn, Tensor raw, Tensor dmat, float sqrt_d, Tensor w1, Tensor b1, "
        "Tensor w2, Tensor b2) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(ho_co_mixer, CPU, m) {
  m.impl("mixed_softmax_forward", &mixed_softmax_forward);
  m.impl("mixed_softmax_backward", &mixed_softmax_backward);
}
