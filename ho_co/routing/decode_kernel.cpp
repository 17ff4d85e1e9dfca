// One decoding step of MatNet's pointer on CPU, fused, for the rollout (no autograd), and the
// sampling draw that follows it.
//
// pointer_step: for every (instance b, start s), with c = current[b, s]:
//   q        = query_first[b, s] + query_cur[b, c]                       (E)
//   glimpse  = per head h: softmax_n(q_h . K[b, n]_h / sqrt(d), masked) V[b, :]_h
//   logits_n = glimpse . logit_keys[b, n] (+ logit_bias[b, n]), tanh-clipped, masked, / temperature
//   out      = log_softmax(logits)
// which is what ho_co.routing.fast.pointer_step computes with torch ops; one row's work stays in
// L1 instead of a dozen [B, S, ...] tensors per step.
//
// sample_rows: torch.multinomial(p, 1) draws argmax_n p_n / q_n with q = Exp(1) noise from the
// generator (-log1p(-u) for u a double uniform, element by element in row order); given the same
// uniforms, drawn by torch into a double tensor, this returns the same indices for p = exp(logp)
// (the rows follow rl4co's [start * batch + instance] order).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace {

constexpr int64_t kMaxWidth = 4096;

inline float exp_le0(float x) {  // as in mixer_kernel.cpp: exp for x <= 0, ~2e-7 relative error
  x = std::max(x, -87.0f);
  const float k = std::nearbyint(x * 1.44269504088896341f);
  const float r = std::fma(k, -0.693145751953125f, std::fma(k, -1.428606765330187045e-06f, x));
  float p = 1.3981999507E-3f;
  p = std::fma(p, r, 8.3334519073E-3f);
  p = std::fma(p, r, 4.1665795894E-2f);
  p = std::fma(p, r, 1.6666665459E-1f);
  p = std::fma(p, r, 5.0000001201E-1f);
  p = std::fma(p, r * r, r) + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &p, sizeof(bits));
  bits += static_cast<int32_t>(k) << 23;
  std::memcpy(&p, &bits, sizeof(bits));
  return p;
}

void check(const at::Tensor& t, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(t.scalar_type() == dtype && t.device().is_cpu() && t.is_contiguous(), "pointer step: ", name,
              " must be a contiguous CPU tensor of ", dtype);
}

// query_first [B, S, E], query_cur [B, N, E], current [B, S] long, keys/values/logit_keys [B, N, E],
// logit_bias [B, N] or empty, mask [B, S, N] bool -> log-probabilities [B, S, N]
at::Tensor pointer_step(const at::Tensor& query_first, const at::Tensor& query_cur, const at::Tensor& current,
                        const at::Tensor& keys, const at::Tensor& values, const at::Tensor& logit_keys,
                        const at::Tensor& logit_bias, const at::Tensor& mask, int64_t heads, bool mask_inner,
                        double tanh_clipping, double temperature) {
  check(query_first, at::kFloat, "query_first");
  check(query_cur, at::kFloat, "query_cur");
  check(current, at::kLong, "current");
  check(keys, at::kFloat, "keys");
  check(values, at::kFloat, "values");
  check(logit_keys, at::kFloat, "logit_keys");
  check(mask, at::kBool, "mask");
  const int64_t B = query_first.size(0), S = query_first.size(1), E = query_first.size(2), N = keys.size(1);
  TORCH_CHECK(E % heads == 0 && E <= kMaxWidth && N <= kMaxWidth, "pointer step: bad sizes");
  const bool has_bias = logit_bias.defined() && logit_bias.numel() > 0;
  if (has_bias) check(logit_bias, at::kFloat, "logit_bias");
  const int64_t d = E / heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const float clip = static_cast<float>(tanh_clipping);
  const float temp = static_cast<float>(temperature);
  auto out = at::empty({B, S, N}, query_first.options());
  const float* qf = query_first.data_ptr<float>();
  const float* qc = query_cur.data_ptr<float>();
  const int64_t* cur = current.data_ptr<int64_t>();
  const float* kp = keys.data_ptr<float>();
  const float* vp = values.data_ptr<float>();
  const float* lk = logit_keys.data_ptr<float>();
  const float* lb = has_bias ? logit_bias.data_ptr<float>() : nullptr;
  const bool* mp = mask.data_ptr<bool>();
  float* op = out.data_ptr<float>();
  const float ninf = -std::numeric_limits<float>::infinity();
  at::parallel_for(0, B * S, 8, [&](int64_t begin, int64_t end) {
    alignas(64) float qb[kMaxWidth], gb[kMaxWidth], sb[kMaxWidth];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / S;
      const int64_t c = cur[row];
      const bool* __restrict__ m = mp + row * N;
      float* __restrict__ q = qb;
      float* __restrict__ g = gb;
      float* __restrict__ sc = sb;
      const float* __restrict__ f = qf + row * E;
      const float* __restrict__ qcur = qc + (b * N + c) * E;
      for (int64_t e = 0; e < E; ++e) {
        q[e] = f[e] + qcur[e];
        g[e] = 0.0f;
      }
      const float* kb = kp + b * N * E;
      const float* vb = vp + b * N * E;
      for (int64_t h = 0; h < heads; ++h) {
        const float* __restrict__ qh = q + h * d;
        float mx = ninf;
        for (int64_t n = 0; n < N; ++n) {
          const float* __restrict__ kn = kb + n * E + h * d;
          float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
          for (int64_t j = 0; j < d; ++j) dot += qh[j] * kn[j];
          sc[n] = (!mask_inner || m[n]) ? dot * scale : ninf;
          mx = std::max(mx, sc[n]);
        }
        float total = 0.0f;
        for (int64_t n = 0; n < N; ++n) {
          sc[n] = sc[n] == ninf ? 0.0f : exp_le0(sc[n] - mx);
          total += sc[n];
        }
        const float inv = 1.0f / total;
        float* __restrict__ gh = g + h * d;
        for (int64_t n = 0; n < N; ++n) {
          const float a = sc[n] * inv;
          if (a == 0.0f) continue;
          const float* __restrict__ vn = vb + n * E + h * d;
#pragma omp simd
          for (int64_t j = 0; j < d; ++j) gh[j] += a * vn[j];
        }
      }
      const float* lkb = lk + b * N * E;
      float mx = ninf;
      for (int64_t n = 0; n < N; ++n) {
        if (!m[n]) {
          sc[n] = ninf;
          continue;
        }
        const float* __restrict__ kn = lkb + n * E;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t e = 0; e < E; ++e) dot += g[e] * kn[e];
        if (lb) dot += lb[b * N + n];
        if (clip > 0.0f) dot = std::tanh(dot) * clip;
        if (temp != 1.0f) dot = dot / temp;
        sc[n] = dot;
        mx = std::max(mx, dot);
      }
      float total = 0.0f;
      for (int64_t n = 0; n < N; ++n) total += sc[n] == ninf ? 0.0f : exp_le0(sc[n] - mx);
      const float lse = std::log(total);
      float* __restrict__ o = op + row * N;
      for (int64_t n = 0; n < N; ++n) o[n] = sc[n] == ninf ? ninf : (sc[n] - mx) - lse;
    }
  });
  return out;
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
  m.def("pointer_step(Tensor query_first, Tensor query_cur, Tensor current, Tensor keys, Tensor values, "
        "Tensor logit_keys, Tensor logit_bias, Tensor mask, int heads, bool mask_inner, float tanh_clipping, "
        "float temperature) -> Tensor");
  m.def("sample_rows(Tensor logp, Tensor uniforms) -> Tensor");
}

TORCH_LIBRARY_IMPL(ho_co_decode, CPU, m) {
  m.impl("pointer_step", &pointer_step);
  m.impl("sample_rows", &sample_rows);
}
