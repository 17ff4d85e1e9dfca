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
// stored, and the parameter gradients are summed per fixed block of rows in double, then the
// blocks in order, so the result does not depend on the thread count.
// float32 only; rows go to threads with at::parallel_for; each row's columns are the inner,
// vectorized loops (the extension is built for the host CPU).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "fast_exp.h"

namespace {

constexpr int64_t kRowsPerBlock = 64;  // fixed, so the gradient sums do not depend on threads
constexpr int64_t kMaxCols = 4096;

// exp(x) for the softmax; arguments are <= 0 here (x - max)
inline float exp_le0(float x) { return ho_co::exp_from_m87(std::max(x, -87.0f)); }

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
  at::parallel_for(0, B * H * M, 16, [&](int64_t begin, int64_t end) {
    alignas(64) float xb[kMaxCols], sb[kMaxCols];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t m = row % M, h = (row / M) % H, b = row / (M * H);
      const float* __restrict__ r = raw_p + row * N;
      const float* __restrict__ c = dmat_p + (b * M + m) * N;
      float* __restrict__ x = xb;
      float* __restrict__ s = sb;
      for (int64_t n = 0; n < N; ++n) {
        x[n] = r[n] / sd;
        s[n] = 0.0f;
      }
      for (int64_t j = 0; j < J; ++j) {
        const float w0 = w1_p[(h * 2) * J + j], w1c = w1_p[(h * 2 + 1) * J + j];
        const float bj = b1_p[h * J + j], v = w2_p[h * J + j];
#pragma omp simd
        for (int64_t n = 0; n < N; ++n) {
          const float pre = x[n] * w0 + c[n] * w1c + bj;
          s[n] += v * std::max(pre, 0.0f);
        }
      }
      const float bias2 = b2_p[h];
      float mx = -std::numeric_limits<float>::infinity();
      for (int64_t n = 0; n < N; ++n) {
        s[n] += bias2;
        mx = std::max(mx, s[n]);
      }
      float total = 0.0f;
#pragma omp simd reduction(+ : total)
      for (int64_t n = 0; n < N; ++n) {
        s[n] = exp_le0(s[n] - mx);
        total += s[n];
      }
      float* __restrict__ o = out_p + row * N;
      const float inv = 1.0f / total;
      for (int64_t n = 0; n < N; ++n) o[n] = s[n] * inv;
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
  const int64_t rows = B * H * M;
  const int64_t blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  const int64_t width = 4 * J + 1;  // per head: dW1[0, j], dW1[1, j], db1[j], dW2[j], db2
  std::vector<double> partial(static_cast<size_t>(blocks * H * width), 0.0);
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
  at::parallel_for(0, blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    alignas(64) float xb[kMaxCols], db[kMaxCols], dxb[kMaxCols];
    std::vector<float> row_sums(static_cast<size_t>(width));
    for (int64_t block = block_begin; block < block_end; ++block) {
      double* acc = partial.data() + block * H * width;
      const int64_t stop = std::min(rows, (block + 1) * kRowsPerBlock);
      for (int64_t row = block * kRowsPerBlock; row < stop; ++row) {
        const int64_t m = row % M, h = (row / M) % H, b = row / (M * H);
        const float* __restrict__ g = g_p + row * N;
        const float* __restrict__ a = a_p + row * N;
        const float* __restrict__ r = raw_p + row * N;
        const float* __restrict__ c = dmat_p + (b * M + m) * N;
        float* __restrict__ x = xb;
        float* __restrict__ ds = db;
        float* __restrict__ dx = dxb;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t n = 0; n < N; ++n) dot += g[n] * a[n];
        float sum_ds = 0.0f;
#pragma omp simd reduction(+ : sum_ds)
        for (int64_t n = 0; n < N; ++n) {
          ds[n] = a[n] * (g[n] - dot);
          x[n] = r[n] / sd;
          dx[n] = 0.0f;
          sum_ds += ds[n];
        }
        for (int64_t j = 0; j < J; ++j) {
          const float w0 = w1_p[(h * 2) * J + j], w1c = w1_p[(h * 2 + 1) * J + j];
          const float bj = b1_p[h * J + j], v = w2_p[h * J + j];
          float s_w0 = 0.0f, s_w1 = 0.0f, s_b1 = 0.0f, s_w2 = 0.0f;
#pragma omp simd reduction(+ : s_w0, s_w1, s_b1, s_w2)
          for (int64_t n = 0; n < N; ++n) {
            const float pre = x[n] * w0 + c[n] * w1c + bj;
            const float t = pre > 0.0f ? ds[n] * v : 0.0f;
            dx[n] += t * w0;
            s_w0 += t * x[n];
            s_w1 += t * c[n];
            s_b1 += t;
            s_w2 += ds[n] * std::max(pre, 0.0f);
          }
          double* hacc = acc + h * width;
          hacc[j] += s_w0;
          hacc[J + j] += s_w1;
          hacc[2 * J + j] += s_b1;
          hacc[3 * J + j] += s_w2;
        }
        acc[h * width + 4 * J] += sum_ds;
        float* __restrict__ out = gr_p + row * N;
        for (int64_t n = 0; n < N; ++n) out[n] = dx[n] / sd;
      }
    }
  });
  std::vector<double> total(static_cast<size_t>(H * width), 0.0);
  for (int64_t block = 0; block < blocks; ++block) {
    const double* acc = partial.data() + block * H * width;
    for (int64_t i = 0; i < H * width; ++i) total[i] += acc[i];
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
