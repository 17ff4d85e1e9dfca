// exp(x) for -87 <= x <= 0, vectorizable: the softmax kernels' exponential (scores minus their
// row's maximum or log-sum-exp). 2^k e^r with |r| <= ln2/2 and a degree-6 polynomial (relative
// error ~2e-7, the rounding of float). Callers clamp x to [-87, 0] first, each as it needs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ho_co {

__attribute__((always_inline)) inline float exp_from_m87(float x) {
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

}  // namespace ho_co
