// The sampling draw of MatNet's multi-start rollout on CPU.
//
// torch.multinomial(p, 1) draws argmax_n p_n / q_n with q = Exp(1) noise from the generator
// (-log1p(-u) for u a double uniform, element by element in row order; its exponential_ is a
// serial, scalar loop). Given the same uniforms, drawn by torch into a double tensor (the same
// generator use), this returns the same indices for p = exp(logp), in one pass that skips the
// noise of nodes already visited (p = 0) and of nodes that cannot win. The rows follow rl4co's
// [start * batch + instance] order.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace {

void check(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.device().is_cpu() && t.is_contiguous(), "sample_rows: ", name,
              " must be a contiguous CPU tensor of ", dtype);
}

// logp [B, S, N] float, uniforms [S * B, N] double -> indices [B, S] (long)
at::Tensor sample_rows(const at::Tensor& logp, const at::Tensor& uniforms) {
  check(logp, at::kFloat, "logp");
  check(uniforms, at::kDouble, "uniforms");
  const int64_t B = logp.size(0), S = logp.size(1), N = logp.size(2);
  TORCH_CHECK(uniforms.size(0) == S * B && uniforms.size(1) == N, "sample_rows: uniforms must be [S * B, N]");
  auto out = at::empty({B, S}, logp.options().dtype(at::kLong));
  const float* lp = logp.data_ptr<float>();
  const double* up = uniforms.data_ptr<double>();
  int64_t* op = out.data_ptr<int64_t>();
  at::parallel_for(0, B * S, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / S, s = row % S;
      const float* __restrict__ l = lp + row * N;
      const double* __restrict__ u = up + (s * B + b) * N;
      int64_t best = 0;
      float best_v = -1.0f;
      for (int64_t n = 0; n < N; ++n) {
        const float p = std::exp(l[n]);
        if (p == 0.0f) {  // p / q = 0: can only win a row of zeros, where argmax takes the first
          if (best_v < 0.0f) { best = n; best_v = 0.0f; }
          continue;
        }
        // q = -log1p(-u) >= u, so p / q <= p / u: a node whose bound cannot beat the best so far
        // loses anyway (exactly: log1p is accurate to an ulp, far inside the gap u^2 / 2, and float
        // rounding and division are monotone); most nodes stop here, before the costly log1p
        if (p / static_cast<float>(u[n]) <= best_v) continue;
        const float q = static_cast<float>(-std::log1p(-u[n]));
        const float v = p / q;
        if (v > best_v || std::isnan(v)) {
          best = n;
          best_v = v;
          if (std::isnan(v)) break;
        }
      }
      op[row] = best;
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(ho_co_decode, m) {
  m.def("sample_rows(Tensor logp, Tensor uniforms) -> Tensor");
}

TORCH_LIBRARY_IMPL(ho_co_decode, CPU, m) {
  m.impl("sample_rows", &sample_rows);
}
