// The tail of MatNet's pointer on CPU: from raw logits to log-probabilities, one row at a time.
//
// Eager torch runs logits -> tanh -> x clip -> + mask -> / temperature -> log_softmax (-> gather
// of the chosen node) as five or six passes over [B, rows, N] tensors, and as many again in
// backward; at a training step's tour pass (rows = starts x steps, ~2400 per instance) each pass
// streams tens of MB through memory. Here each row is read once, kept in a padded local buffer and
// finished there. The elementwise steps are eager's, operation for operation, with tanh from a
// polynomial and exp (torch's comes from MKL, ~4x slower here) and the log-sum-exp summed in
// another order: the log-probabilities match torch's to float rounding, not bit for bit.
//
// logits, mask: [..., N] contiguous float (mask additive: 0 or -inf); rows are independent, so
// results do not depend on the thread count.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "simd.h"

namespace {

using ho_co::load8;
using ho_co::splat;
using ho_co::store8;
using ho_co::vf8;
using ho_co::vi8;

constexpr int64_t kMaxKeys = 4096;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// tanh on eight lanes, within 1.5 ulp of the exact value (torch's, MKL's or Sleef's, is within
// 1 ulp, so the two differ in the last bit at most): an odd polynomial fitted to tanh(x) / x
// below 0.875, (1 - e) / (1 + e) with e = exp(-2|x|) above; the sign restored; NaN kept.
inline vf8 tanh8(vf8 x) {
  const vi8 sign = reinterpret_cast<vi8>(x) & static_cast<int32_t>(0x80000000);
  const vf8 a = reinterpret_cast<vf8>(reinterpret_cast<vi8>(x) & 0x7fffffff);
  const vf8 u = a * a;
  vf8 p = splat(-0.0004760747542604804f);
  p = p * u + 0.002633085008710623f;
  p = p * u - 0.008311724290251732f;
  p = p * u + 0.021684465929865837f;
  p = p * u - 0.05393363535404205f;
  p = p * u + 0.1333301067352295f;
  p = p * u - 0.33333322405815125f;
  const vf8 small = a + a * (p * u);
  const vf8 m2a = -2.0f * a;
  const vf8 e = ho_co::exp_from_m87(ho_co::select(m2a >= -87.0f, m2a, splat(-87.0f)));
  const vf8 big = (1.0f - e) / (1.0f + e);
  const vf8 r = ho_co::select(a < 0.875f, small, big);
  const vf8 signed_r = reinterpret_cast<vf8>(reinterpret_cast<vi8>(r) | sign);
  return ho_co::select(a == a, signed_r, x);  // NaN in, NaN out
}

// exp(x) for x <= 0 on eight lanes; 0 below -87, -inf and NaN included (only a row's padding and
// masked keys get there)
inline vf8 exp_le0(vf8 x) {
  const vi8 in_range = x >= -87.0f;
  return ho_co::where(in_range, ho_co::exp_from_m87(ho_co::select(in_range, x, splat(-87.0f))));
}

struct Settings {
  float clip;         // tanh clipping; 0: none
  float temperature;  // 1: no division
};

// Eight floats of a row from column j on; past the row's end (its last, partial vector) `pad`
inline vf8 load_row8(const float* row, int64_t j, int64_t N, float pad) {
  if (j + 8 <= N) return load8(row + j);
  alignas(32) float buf[8];
  std::fill(buf, buf + 8, pad);
  std::copy(row + j, row + N, buf);
  return load8(buf);
}

// The scores from tanh(l) (l itself without clipping) and the mask: (clip * t + m) / T, eager's
// operations in eager's order
inline vf8 scores8(vf8 t, vf8 m, Settings s) {
  vf8 c = s.clip > 0.0f ? t * s.clip : t;
  c = c + m;
  if (s.temperature != 1.0f) c = c / s.temperature;
  return c;
}

// One row: c = (clip * tanh(l) + m) / T into c[0..Np) (padding -inf), t = tanh(l) (or l without
// clipping) into t when given; returns the row's log-sum-exp (NaN when every key is masked, as
// torch's log_softmax gives).
inline float row_scores(const float* l, const float* m, int64_t N, int64_t Np, Settings s, float* c, float* t) {
  vf8 top = splat(kNegInf);
  for (int64_t j = 0; j < Np; j += 8) {
    vf8 v = load_row8(l, j, N, 0.0f);
    if (s.clip > 0.0f) v = tanh8(v);
    if (t != nullptr) store8(t + j, v);
    v = scores8(v, load_row8(m, j, N, kNegInf), s);
    store8(c + j, v);
    top = top > v ? top : v;
  }
  float mx = top[0];
  for (int l2 = 1; l2 < 8; ++l2) mx = std::max(mx, top[l2]);
  if (mx == kNegInf || std::isnan(mx)) return kNaN;
  vf8 part{};
  for (int64_t j = 0; j < Np; j += 8) part += exp_le0(load8(c + j) - mx);
  float total = 0.0f;
  for (int l2 = 0; l2 < 8; ++l2) total += part[l2];
  return mx + std::log(total);
}

void check_rows(const at::Tensor& logits, const at::Tensor& mask) {
  TORCH_CHECK(logits.scalar_type() == at::kFloat && mask.scalar_type() == at::kFloat && logits.device().is_cpu() &&
                  mask.device().is_cpu(),
              "pointer tail: float32 CPU tensors only");
  TORCH_CHECK(logits.is_contiguous() && mask.is_contiguous() && logits.sizes() == mask.sizes(),
              "pointer tail: logits and mask must be contiguous and of one shape, got ", logits.sizes(), " and ",
              mask.sizes());
  TORCH_CHECK(logits.dim() >= 1 && logits.size(-1) >= 1 && logits.size(-1) <= kMaxKeys, "pointer tail: 1 to ",
              kMaxKeys, " keys per row");
}

int64_t padded(int64_t n) { return (n + 7) / 8 * 8; }

// log_softmax((clip * tanh(logits) + mask) / T) over the last dim: the rollout step's log-probabilities
at::Tensor pointer_log_softmax(const at::Tensor& logits, const at::Tensor& mask, double clip, double temperature) {
  check_rows(logits, mask);
  const int64_t N = logits.size(-1), rows = logits.numel() / N, Np = padded(N);
  auto out = at::empty_like(logits);
  const float *lp = logits.data_ptr<float>(), *mp = mask.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const Settings s{static_cast<float>(clip), static_cast<float>(temperature)};
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    alignas(32) float c[kMaxKeys + 8];
    for (int64_t r = begin; r < end; ++r) {
      const float lse = row_scores(lp + r * N, mp + r * N, N, Np, s, c, nullptr);
      for (int64_t j = 0; j < N; ++j) op[r * N + j] = c[j] - lse;
    }
  });
  return out;
}

// The chosen node's log-probability per row, the row's log-sum-exp and tanh(logits) (the logits
// without clipping): what the backward needs. chosen: [...] long, one index per row.
std::tuple<at::Tensor, at::Tensor, at::Tensor> pointer_chosen_forward(const at::Tensor& logits, const at::Tensor& mask,
                                                                      const at::Tensor& chosen, double clip,
                                                                      double temperature) {
  check_rows(logits, mask);
  const int64_t N = logits.size(-1), rows = logits.numel() / N, Np = padded(N);
  TORCH_CHECK(chosen.scalar_type() == at::kLong && chosen.is_contiguous() && chosen.numel() == rows,
              "pointer tail: chosen must be one contiguous long index per row");
  auto chosen_logp = at::empty(chosen.sizes(), logits.options());
  auto lse = at::empty(chosen.sizes(), logits.options());
  auto t = at::empty_like(logits);
  const float *lp = logits.data_ptr<float>(), *mp = mask.data_ptr<float>();
  const int64_t* cp = chosen.data_ptr<int64_t>();
  float *op = chosen_logp.data_ptr<float>(), *sp = lse.data_ptr<float>(), *tp = t.data_ptr<float>();
  const Settings s{static_cast<float>(clip), static_cast<float>(temperature)};
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    alignas(32) float c[kMaxKeys + 8], tb[kMaxKeys + 8];
    for (int64_t r = begin; r < end; ++r) {
      const int64_t k = cp[r];
      TORCH_CHECK(k >= 0 && k < N, "pointer tail: chosen index ", k, " out of range for ", N, " keys");
      sp[r] = row_scores(lp + r * N, mp + r * N, N, Np, s, c, tb);
      op[r] = c[k] - sp[r];
      std::copy(tb, tb + N, tp + r * N);
    }
  });
  return {chosen_logp, lse, t};
}

// d logits from d(chosen log-probability): softmax's (onehot - p) * g, through the temperature,
// the clipping and tanh (1 - t^2), as eager autograd's chain computes them
at::Tensor pointer_chosen_backward(const at::Tensor& grad, const at::Tensor& t, const at::Tensor& mask,
                                   const at::Tensor& chosen, const at::Tensor& lse, double clip, double temperature) {
  check_rows(t, mask);
  const int64_t N = t.size(-1), rows = t.numel() / N;
  TORCH_CHECK(grad.scalar_type() == at::kFloat && grad.numel() == rows && lse.numel() == rows &&
                  chosen.numel() == rows,
              "pointer tail backward: one gradient, log-sum-exp and index per row");
  const auto g = grad.contiguous();
  auto dl = at::empty_like(t);
  const float *tp = t.data_ptr<float>(), *mp = mask.data_ptr<float>(), *gp = g.data_ptr<float>(),
              *sp = lse.data_ptr<float>();
  const int64_t* cp = chosen.data_ptr<int64_t>();
  float* dp = dl.data_ptr<float>();
  const Settings s{static_cast<float>(clip), static_cast<float>(temperature)};
  at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
    alignas(32) float dbuf[8];
    for (int64_t r = begin; r < end; ++r) {
      const float gr = gp[r], shift = sp[r];
      const float *tr = tp + r * N, *mr = mp + r * N;
      float* out = dp + r * N;
      const vi8 lane = {0, 1, 2, 3, 4, 5, 6, 7};
      for (int64_t j = 0; j < N; j += 8) {
        const vf8 tv = load_row8(tr, j, N, 0.0f);
        const vf8 c = scores8(tv, load_row8(mr, j, N, kNegInf), s);
        const vf8 p = exp_le0(c - shift);
        const vf8 onehot = ho_co::where(lane + static_cast<int32_t>(j) == static_cast<int32_t>(cp[r]), splat(gr));
        vf8 d = onehot - p * gr;
        if (s.temperature != 1.0f) d = d / s.temperature;
        if (s.clip > 0.0f) d = d * s.clip * (1.0f - tv * tv);
        if (j + 8 > N) {
          store8(dbuf, d);
          std::copy(dbuf, dbuf + (N - j), out + j);
        } else {
          store8(out + j, d);
        }
      }
    }
  });
  return dl;
}

}  // namespace

TORCH_LIBRARY(ho_co_pointer, m) {
  m.def("pointer_log_softmax(Tensor logits, Tensor mask, float clip, float temperature) -> Tensor");
  m.def("pointer_chosen_forward(Tensor logits, Tensor mask, Tensor chosen, float clip, float temperature) -> "
        "(Tensor, Tensor, Tensor)");
  m.def("pointer_chosen_backward(Tensor grad, Tensor t, Tensor mask, Tensor chosen, Tensor lse, float clip, "
        "float temperature) -> Tensor");
}

TORCH_LIBRARY_IMPL(ho_co_pointer, CPU, m) {
  m.impl("pointer_log_softmax", &pointer_log_softmax);
  m.impl("pointer_chosen_forward", &pointer_chosen_forward);
  m.impl("pointer_chosen_backward", &pointer_chosen_backward);
}
