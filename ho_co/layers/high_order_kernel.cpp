// Fused element-wise part of HOLinear on CPU: one sweep over the K planes z_1..z_K forward
// and one backward, instead of the several passes that eager torch needs.
//
// For each output element (z_1..z_K at the same row and column):
//   P = prod_k (1 + z_k) - 1, accumulated as P <- (P + z_k) + P z_k (no 1 + z - 1 cancellation),
//   F = sum_k z_k (the first order),
//   y = P + b                       (no scale: the paper's operator)
//   y = F + s (P - F) + b           (scale s: the learnable high-order strength)
// Backward: dP/dz_k = prod_{i != k} (1 + z_i) = 1 + A_k + B_k + A_k B_k, with the prefix
// A_k = prod_{i<k}(1+z_i) - 1 and suffix B_k = prod_{i>k}(1+z_i) - 1 in the same "minus one"
// form, so no division (z_k = -1 is fine) and no cancellation; dy/dz_k = 1 + s (dP/dz_k - 1).
// Arithmetic runs in float for bf16/fp16 planes (double for double), rows are split across
// threads with at::parallel_for, and each row's columns form the contiguous inner loops.

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

namespace {

constexpr int64_t kRowsPerTask = 16;

// Loops run over one row's columns on local float buffers with restrict pointers, so that the
// compiler vectorizes them; the planes are read and written once each.
template <bool HasScale, typename scalar_t, typename acc_t>
void forward_rows(const scalar_t* z, const acc_t* __restrict__ scale, const acc_t* __restrict__ bias,
                  scalar_t* y, int64_t K, int64_t R, int64_t C, int64_t begin, int64_t end) {
  std::vector<acc_t> p_buf(C), f_buf(C);
  acc_t* __restrict__ p = p_buf.data();
  acc_t* __restrict__ f = f_buf.data();
  const int64_t plane = R * C;
  for (int64_t r = begin; r < end; ++r) {
    const scalar_t* __restrict__ z0 = z + r * C;
    for (int64_t c = 0; c < C; ++c) p[c] = static_cast<acc_t>(z0[c]);
    if (HasScale) {
      for (int64_t c = 0; c < C; ++c) f[c] = p[c];
    }
    for (int64_t k = 1; k < K; ++k) {
      const scalar_t* __restrict__ zk = z0 + k * plane;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = static_cast<acc_t>(zk[c]);
        p[c] = (p[c] + v) + p[c] * v;  // the same rounding steps as the torch ops
        if (HasScale) f[c] += v;
      }
    }
    if (HasScale) {
      for (int64_t c = 0; c < C; ++c) p[c] = f[c] + scale[c] * (p[c] - f[c]);
    }
    if (bias) {
      for (int64_t c = 0; c < C; ++c) p[c] += bias[c];
    }
    scalar_t* __restrict__ yr = y + r * C;
    for (int64_t c = 0; c < C; ++c) yr[c] = static_cast<scalar_t>(p[c]);
  }
}

// grad_z[k] = g * (1 + s (A_k + B_k + A_k B_k)); partial sums of g (P - F) and of g per column
// go to this task's row of `scale_sums` / `bias_sums`. A row of z is copied to a local buffer
// first, so grad_z may share z's storage.
template <bool HasScale, typename scalar_t, typename acc_t>
void backward_rows(const scalar_t* g, const scalar_t* z, const acc_t* __restrict__ scale, scalar_t* grad_z,
                   acc_t* __restrict__ scale_sums, acc_t* __restrict__ bias_sums, int64_t K, int64_t R,
                   int64_t C, int64_t begin, int64_t end) {
  std::vector<acc_t> zs_buf(K * C), suffix_buf(K * C), prefix_buf(C), f_buf(C), g_buf(C);
  acc_t* __restrict__ zs = zs_buf.data();
  acc_t* __restrict__ suffix = suffix_buf.data();
  acc_t* __restrict__ prefix = prefix_buf.data();
  acc_t* __restrict__ f = f_buf.data();
  acc_t* __restrict__ gr = g_buf.data();
  const int64_t plane = R * C;
  for (int64_t r = begin; r < end; ++r) {
    for (int64_t k = 0; k < K; ++k) {
      const scalar_t* __restrict__ zk = z + k * plane + r * C;
      acc_t* __restrict__ dst = zs + k * C;
      for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<acc_t>(zk[c]);
    }
    const scalar_t* __restrict__ grow = g + r * C;
    for (int64_t c = 0; c < C; ++c) gr[c] = static_cast<acc_t>(grow[c]);
    // suffix[k] = prod_{i>k} (1 + z_i) - 1
    acc_t* __restrict__ last = suffix + (K - 1) * C;
    for (int64_t c = 0; c < C; ++c) last[c] = acc_t(0);
    for (int64_t k = K - 2; k >= 0; --k) {
      const acc_t* __restrict__ next = suffix + (k + 1) * C;
      const acc_t* __restrict__ zn = zs + (k + 1) * C;
      acc_t* __restrict__ cur = suffix + k * C;
      for (int64_t c = 0; c < C; ++c) cur[c] = (next[c] + zn[c]) + next[c] * zn[c];
    }
    for (int64_t c = 0; c < C; ++c) {
      prefix[c] = acc_t(0);
      f[c] = acc_t(0);
    }
    for (int64_t k = 0; k < K; ++k) {
      const acc_t* __restrict__ b = suffix + k * C;
      const acc_t* __restrict__ zk = zs + k * C;
      scalar_t* __restrict__ out = grad_z + k * plane + r * C;
      if (HasScale) {
        for (int64_t c = 0; c < C; ++c) {
          const acc_t others = prefix[c] + b[c] + prefix[c] * b[c];
          out[c] = static_cast<scalar_t>(gr[c] * (acc_t(1) + scale[c] * others));
        }
        for (int64_t c = 0; c < C; ++c) f[c] += zk[c];
      } else {
        for (int64_t c = 0; c < C; ++c) {
          const acc_t others = prefix[c] + b[c] + prefix[c] * b[c];
          out[c] = static_cast<scalar_t>(gr[c] * (acc_t(1) + others));
        }
      }
      for (int64_t c = 0; c < C; ++c) prefix[c] = (prefix[c] + zk[c]) + prefix[c] * zk[c];
    }
    if (HasScale && scale_sums) {  // prefix now holds P
      for (int64_t c = 0; c < C; ++c) scale_sums[c] += gr[c] * (prefix[c] - f[c]);
    }
    if (bias_sums) {
      for (int64_t c = 0; c < C; ++c) bias_sums[c] += gr[c];
    }
  }
}

void check_planes(const at::Tensor& z) {
  TORCH_CHECK(z.device().is_cpu(), "high_order: z must be on the CPU, got ", z.device());
  TORCH_CHECK(z.dim() >= 2, "high_order: z must be [K, ..., C], got ", z.sizes());
  TORCH_CHECK(z.size(0) >= 1, "high_order: z needs at least one plane");
}

const void* optional_ptr(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr() : nullptr;
}

at::Tensor high_order_forward(const at::Tensor& z_in, const std::optional<at::Tensor>& scale_in,
                              const std::optional<at::Tensor>& bias_in) {
  check_planes(z_in);
  const at::Tensor z = z_in.contiguous();
  const int64_t K = z.size(0), C = z.size(-1);
  const int64_t R = C == 0 ? 0 : z.numel() / (K * C);
  std::vector<int64_t> out_shape(z.sizes().begin() + 1, z.sizes().end());
  at::Tensor y = at::empty(out_shape, z.options());
  const auto acc_type = at::toOpMathType(z.scalar_type());
  std::optional<at::Tensor> scale, bias;
  if (scale_in.has_value()) scale = scale_in->to(acc_type).contiguous();
  if (bias_in.has_value()) bias = bias_in->to(acc_type).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "high_order_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t* sp = static_cast<const acc_t*>(optional_ptr(scale));
    const acc_t* bp = static_cast<const acc_t*>(optional_ptr(bias));
    at::parallel_for(0, R, kRowsPerTask, [&](int64_t begin, int64_t end) {
      if (sp) {
        forward_rows<true, scalar_t, acc_t>(zp, sp, bp, yp, K, R, C, begin, end);
      } else {
        forward_rows<false, scalar_t, acc_t>(zp, sp, bp, yp, K, R, C, begin, end);
      }
    });
  });
  return y;
}

// Returns (grad_z, grad_scale, grad_bias); the last two are undefined unless asked for.
// overwrite_z: write grad_z into z's storage (z is not needed afterwards), which saves
// allocating, and page-faulting in, K fresh planes.
std::tuple<at::Tensor, at::Tensor, at::Tensor> high_order_backward(
    const at::Tensor& grad_in, const at::Tensor& z_in, const std::optional<at::Tensor>& scale_in,
    bool need_scale, bool need_bias, bool overwrite_z) {
  check_planes(z_in);
  const at::Tensor z = z_in.contiguous();
  const at::Tensor g = grad_in.to(z.scalar_type()).contiguous();
  const int64_t K = z.size(0), C = z.size(-1);
  const int64_t R = C == 0 ? 0 : z.numel() / (K * C);
  TORCH_CHECK(g.numel() == R * C, "high_order: grad has ", g.numel(), " elements, expected ", R * C);
  at::Tensor grad_z = overwrite_z ? z : at::empty_like(z);
  const auto acc_type = at::toOpMathType(z.scalar_type());
  std::optional<at::Tensor> scale;
  if (scale_in.has_value()) scale = scale_in->to(acc_type).contiguous();
  need_scale = need_scale && scale.has_value();
  // Per-task partial column sums, reduced at the end in a fixed order (deterministic).
  const int64_t tasks = (R + kRowsPerTask - 1) / kRowsPerTask;
  at::Tensor scale_sums = need_scale ? at::zeros({tasks, C}, z.options().dtype(acc_type)) : at::Tensor();
  at::Tensor bias_sums = need_bias ? at::zeros({tasks, C}, z.options().dtype(acc_type)) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, z.scalar_type(), "high_order_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* zp = z.const_data_ptr<scalar_t>();
    const scalar_t* gp = g.const_data_ptr<scalar_t>();
    scalar_t* out = grad_z.mutable_data_ptr<scalar_t>();
    const acc_t* sp = static_cast<const acc_t*>(optional_ptr(scale));
    acc_t* ss = need_scale ? scale_sums.mutable_data_ptr<acc_t>() : nullptr;
    acc_t* bs = need_bias ? bias_sums.mutable_data_ptr<acc_t>() : nullptr;
    at::parallel_for(0, tasks, 1, [&](int64_t t_begin, int64_t t_end) {
      for (int64_t t = t_begin; t < t_end; ++t) {
        const int64_t begin = t * kRowsPerTask, end = std::min(R, begin + kRowsPerTask);
        acc_t* s_row = ss ? ss + t * C : nullptr;
        acc_t* b_row = bs ? bs + t * C : nullptr;
        if (sp) {
          backward_rows<true, scalar_t, acc_t>(gp, zp, sp, out, s_row, b_row, K, R, C, begin, end);
        } else {
          backward_rows<false, scalar_t, acc_t>(gp, zp, sp, out, s_row, b_row, K, R, C, begin, end);
        }
      }
    });
  });
  at::Tensor grad_scale = need_scale ? scale_sums.sum(0) : at::Tensor();
  at::Tensor grad_bias = need_bias ? bias_sums.sum(0) : at::Tensor();
  return {grad_z, grad_scale, grad_bias};
}

}  // namespace

TORCH_LIBRARY(ho_co_kernels, m) {
  m.def("high_order_forward(Tensor z, Tensor? scale, Tensor? bias) -> Tensor");
  m.def("high_order_backward(Tensor grad, Tensor z, Tensor? scale, bool need_scale, bool need_bias, "
        "bool overwrite_z) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ho_co_kernels, CPU, m) {
  m.impl("high_order_forward", &high_order_forward);
  m.impl("high_order_backward", &high_order_backward);
}
