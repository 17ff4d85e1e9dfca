// What the CPU kernels share: eight floats in one AVX2 register (GCC/Clang vector extensions:
// kept in registers, portable) and the softmax exponential, scalar and eight lanes at once.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ho_co {

typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
typedef float vf8u __attribute__((vector_size(32), aligned(4)));  // unaligned loads and stores
inline vf8 load8(const float* p) { return *reinterpret_cast<const vf8u*>(p); }
inline void store8(float* p, vf8 v) { *reinterpret_cast<vf8u*>(p) = v; }
inline vf8 splat(float x) { return vf8{x, x, x, x, x, x, x, x}; }
inline vf8 where(vi8 mask, vf8 v) { return reinterpret_cast<vf8>(reinterpret_cast<vi8>(v) & mask); }  // else 0
inline vf8 select(vi8 mask, vf8 a, vf8 b) {  // a where mask, else b
  return reinterpret_cast<vf8>((reinterpret_cast<vi8>(a) & mask) | (reinterpret_cast<vi8>(b) & ~mask));
}

// exp(x) for -87 <= x <= 0, vectorizable: the softmax kernels' exponential (scores minus their
// row's maximum or log-sum-exp). 2^k e^r with |r| <= ln2/2 and a degree-6 polynomial (relative
// error ~2e-7, the rounding of float). Callers clamp x to [-87, 0] first, each as it needs.
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

// The same on eight lanes, for loops the compiler does not vectorize itself: k rounded to
// nearest with the 1.5 * 2^23 shifter, the same polynomial (the multiply-adds contract to FMAs).
__attribute__((always_inline)) inline vf8 exp_from_m87(vf8 x) {
  const vf8 shifter = splat(12582912.0f);
  const vf8 k = (x * 1.44269504088896341f + shifter) - shifter;
  const vf8 r = k * -0.693145751953125f + (k * -1.428606765330187045e-06f + x);
  vf8 p = splat(1.3981999507E-3f);
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + r + 1.0f;
  return reinterpret_cast<vf8>(reinterpret_cast<vi8>(p) + (__builtin_convertvector(k, vi8) << 23));
}

}  // namespace ho_co
