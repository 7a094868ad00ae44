// Fused elementwise CPU kernels (paddle custom operators), each with its backward:
//   pf_dropout            y = x * mask / (1 - p)
//   pf_bias_gelu          y = dropout(gelu(x + b))                      (the first FFN linear's epilogue)
//   pf_add_norm           y = layer_norm(residual + dropout(x + b))     (post-LN "add & norm")
//   pf_layer_norm         y = layer_norm(x)                             (BART's embedding norms)
// Bias gradients are column sums in fixed row chunks; dropout masks are recomputed from their seed in
// the backward instead of being stored (common.h).
#include <atomic>

#include "common.h"

namespace pf {
int g_threads = 1;
}

extern "C" void pf_set_threads(int n) { pf::g_threads = n; }
extern "C" int pf_get_threads() { return pf::g_threads; }

// How many iterations the worksharing loops the kernels use execute over n iterations on threads()
// threads: 3 n when the OpenMP runtime splits them. The loader (native.py) checks it once, because a
// runtime that lacks an entry point the compiler emitted splits nothing: with GCC's nonmonotonic
// dynamic schedule on paddle's libiomp5, every thread ran every iteration, so two threads did the work
// twice and took as long as one (common.h).
extern "C" int64_t pf_parallel_iterations(int64_t n) {
  std::atomic<int64_t> done{0};
#pragma omp parallel num_threads(pf::threads())
  {
#pragma omp for schedule(monotonic: dynamic, 1)
    for (int64_t i = 0; i < n; ++i) done.fetch_add(1, std::memory_order_relaxed);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) done.fetch_add(1, std::memory_order_relaxed);
  }
#pragma omp parallel for num_threads(pf::threads()) schedule(static)
  for (int64_t i = 0; i < n; ++i) done.fetch_add(1, std::memory_order_relaxed);
  return done.load();
}

namespace {

void check_cpu_float(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu(), name, " must be on the CPU");
  PD_CHECK(t.dtype() == paddle::DataType::FLOAT32, name, " must be float32");
}

// ------------------------------------------------------------------------------------------------
// pf_dropout
// ------------------------------------------------------------------------------------------------
std::vector<paddle::Tensor> DropoutApply(const paddle::Tensor& x, float p, int64_t seed) {
  check_cpu_float(x, "x");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const float* xp = x.data<float>();
  float* op = out.data<float>();
  const int64_t n = x.numel(), block = 4096, blocks = (n + block - 1) / block;
  pf::Dropout d(p, seed);
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(block);
#pragma omp for schedule(static)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t start = b * block, len = std::min(block, n - start);
      d.fill(start, len, f.data());
      for (int64_t i = 0; i < len; ++i) op[start + i] = xp[start + i] * f[i];
    }
  }
  return {out};
}

std::vector<paddle::Tensor> DropoutForward(const paddle::Tensor& x, float p, int64_t seed) { return DropoutApply(x, p, seed); }
std::vector<paddle::Tensor> DropoutBackward(const paddle::Tensor& dy, float p, int64_t seed) { return DropoutApply(dy, p, seed); }

// ------------------------------------------------------------------------------------------------
// pf_bias_gelu: x [.., F] (a linear's output without its bias), bias [F]
// ------------------------------------------------------------------------------------------------
std::vector<paddle::Tensor> BiasGeluForward(const paddle::Tensor& x, const paddle::Tensor& bias, float p, int64_t seed) {
  check_cpu_float(x, "x");
  check_cpu_float(bias, "bias");
  const int64_t cols = pf::last_dim(x), rows = pf::leading_rows(x);
  PD_CHECK(bias.numel() == cols, "bias has ", bias.numel(), " values for ", cols, " columns");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  const float* xp = x.data<float>();
  const float* bp = bias.data<float>();
  float* op = out.data<float>();
  pf::Dropout d(p, seed);
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(d.active ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * cols;
      float* yr = op + r * cols;
      for (int64_t j = 0; j < cols; ++j) yr[j] = pf::gelu(xr[j] + bp[j]);
      if (d.active) {
        d.fill(r * cols, cols, f.data());
        for (int64_t j = 0; j < cols; ++j) yr[j] *= f[j];
      }
    }
  }
  return {out};
}

std::vector<paddle::Tensor> BiasGeluBackward(const paddle::Tensor& x, const paddle::Tensor& bias, const paddle::Tensor& dy,
                                             float p, int64_t seed) {
  const int64_t cols = pf::last_dim(x), rows = pf::leading_rows(x);
  auto dx = paddle::empty(x.shape(), x.dtype(), x.place());
  auto dbias = paddle::empty(bias.shape(), bias.dtype(), bias.place());
  const float* xp = x.data<float>();
  const float* bp = bias.data<float>();
  const float* gp = dy.data<float>();
  float* dxp = dx.data<float>();
  pf::Dropout d(p, seed);
  pf::ColumnSums sums(rows, cols);
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(d.active ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < sums.chunks; ++c) {
      float* acc = sums.chunk(c);
      for (int64_t r = c * pf::kChunkRows; r < std::min(rows, (c + 1) * pf::kChunkRows); ++r) {
        const float* xr = xp + r * cols;
        const float* gr = gp + r * cols;
        float* dr = dxp + r * cols;
        for (int64_t j = 0; j < cols; ++j) dr[j] = gr[j] * pf::gelu_grad(xr[j] + bp[j]);
        if (d.active) {
          d.fill(r * cols, cols, f.data());
          for (int64_t j = 0; j < cols; ++j) dr[j] *= f[j];
        }
        for (int64_t j = 0; j < cols; ++j) acc[j] += dr[j];
      }
    }
  }
  sums.finish(dbias.data<float>());
  return {dx, dbias};
}

// ------------------------------------------------------------------------------------------------
// One row of a layer norm, shared by pf_add_norm and pf_layer_norm.
// ------------------------------------------------------------------------------------------------
// s (one row, overwritten with xhat = (s - mean) * rstd) -> y = xhat * gamma + beta; returns rstd.
inline float normalize_row(float* s, float* y, const float* gamma, const float* beta, int64_t cols, float epsilon) {
  const float inv_cols = 1.f / static_cast<float>(cols);
  const float mean = pf::sum_of(s, cols) * inv_cols;
  for (int64_t j = 0; j < cols; ++j) y[j] = s[j] - mean;  // centered, in the output row for now
  const float inv = 1.f / std::sqrt(pf::dot_of(y, y, cols) * inv_cols + epsilon);
  for (int64_t j = 0; j < cols; ++j) {
    const float h = y[j] * inv;
    s[j] = h;
    y[j] = h * gamma[j] + beta[j];
  }
  return inv;
}

// ds = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * gamma (g: a row of scratch).
inline void normalize_row_grad(const float* xhat, const float* dy, const float* gamma, float rstd, int64_t cols, float* g,
                               float* ds) {
  const float inv_cols = 1.f / static_cast<float>(cols);
  for (int64_t j = 0; j < cols; ++j) g[j] = dy[j] * gamma[j];
  const float a = pf::sum_of(g, cols) * inv_cols, b = pf::dot_of(g, xhat, cols) * inv_cols;
  for (int64_t j = 0; j < cols; ++j) ds[j] = rstd * (g[j] - a - xhat[j] * b);
}

// ------------------------------------------------------------------------------------------------
// pf_add_norm: x [N, D] (a linear's output without its bias), bias [D], residual [N, D], gamma/beta [D]
//   s = residual + dropout(x + bias);  y = (s - mean) * rstd * gamma + beta
// pf_layer_norm: the same with s = x (BART's embedding norms: no bias, residual or dropout).
// The backward needs only xhat = (s - mean) * rstd, rstd, gamma and the seed. One forward and one backward
// serve both ops; bias and residual are null for pf_layer_norm.
// ------------------------------------------------------------------------------------------------
std::vector<paddle::Tensor> norm_forward(const paddle::Tensor& x, const float* bias, const float* residual, const paddle::Tensor& gamma,
                                         const paddle::Tensor& beta, float epsilon, const pf::Dropout& d) {
  const int64_t cols = pf::last_dim(x), rows = pf::leading_rows(x);
  PD_CHECK(gamma.numel() == cols && beta.numel() == cols, "gamma/beta must have ", cols, " values");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  auto xhat = paddle::empty(x.shape(), x.dtype(), x.place());
  auto rstd = paddle::empty({rows}, x.dtype(), x.place());
  const float* xp = x.data<float>();
  const float* gp = gamma.data<float>();
  const float* betap = beta.data<float>();
  float* op = out.data<float>();
  float* hp = xhat.data<float>();
  float* sp = rstd.data<float>();
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(d.active ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * cols;
      float* hr = hp + r * cols;
      if (residual == nullptr) {
        std::memcpy(hr, xr, cols * sizeof(float));
      } else if (d.active) {
        const float* rr = residual + r * cols;
        d.fill(r * cols, cols, f.data());
        for (int64_t j = 0; j < cols; ++j) hr[j] = rr[j] + (xr[j] + bias[j]) * f[j];
      } else {
        const float* rr = residual + r * cols;
        for (int64_t j = 0; j < cols; ++j) hr[j] = rr[j] + (xr[j] + bias[j]);
      }
      sp[r] = normalize_row(hr, op + r * cols, gp, betap, cols, epsilon);
    }
  }
  return {out, xhat, rstd};
}

// ds (the gradient of s) into `ds`, and the column sums dgamma and dbeta; with dx (pf_add_norm), also
// dx = dropout'(ds) and its column sums into dbias.
void norm_backward(const paddle::Tensor& xhat, const paddle::Tensor& rstd, const paddle::Tensor& gamma, const paddle::Tensor& dy,
                   const pf::Dropout& d, float* ds, float* dx, float* dbias, float* dgamma, float* dbeta) {
  const int64_t cols = pf::last_dim(xhat), rows = pf::leading_rows(xhat);
  const float* hp = xhat.data<float>();
  const float* sp = rstd.data<float>();
  const float* gp = gamma.data<float>();
  const float* dyp = dy.data<float>();
  pf::ColumnSums sum_db(dx != nullptr ? rows : 0, cols), sum_dg(rows, cols), sum_dbeta(rows, cols);
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(d.active ? cols : 0), g(cols);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < sum_dg.chunks; ++c) {
      float* acc_dg = sum_dg.chunk(c);
      float* acc_dbeta = sum_dbeta.chunk(c);
      for (int64_t r = c * pf::kChunkRows; r < std::min(rows, (c + 1) * pf::kChunkRows); ++r) {
        const float* hr = hp + r * cols;
        const float* dyr = dyp + r * cols;
        float* dsr = ds + r * cols;
        normalize_row_grad(hr, dyr, gp, sp[r], cols, g.data(), dsr);
        if (dx != nullptr) {
          float* dxr = dx + r * cols;
          float* acc_db = sum_db.chunk(c);
          if (d.active) {
            d.fill(r * cols, cols, f.data());
            for (int64_t j = 0; j < cols; ++j) dxr[j] = dsr[j] * f[j];
          } else {
            for (int64_t j = 0; j < cols; ++j) dxr[j] = dsr[j];
          }
          for (int64_t j = 0; j < cols; ++j) acc_db[j] += dxr[j];
        }
        for (int64_t j = 0; j < cols; ++j) {
          acc_dg[j] += dyr[j] * hr[j];
          acc_dbeta[j] += dyr[j];
        }
      }
    }
  }
  if (dx != nullptr) sum_db.finish(dbias);
  sum_dg.finish(dgamma);
  sum_dbeta.finish(dbeta);
}

std::vector<paddle::Tensor> AddNormForward(const paddle::Tensor& x, const paddle::Tensor& bias, const paddle::Tensor& residual,
                                           const paddle::Tensor& gamma, const paddle::Tensor& beta, float epsilon, float p,
                                           int64_t seed) {
  for (auto* t : {&x, &bias, &residual, &gamma, &beta}) check_cpu_float(*t, "add_norm input");
  PD_CHECK(residual.numel() == x.numel(), "residual and x differ in size");
  PD_CHECK(bias.numel() == pf::last_dim(x), "bias must have ", pf::last_dim(x), " values");
  return norm_forward(x, bias.data<float>(), residual.data<float>(), gamma, beta, epsilon, pf::Dropout(p, seed));
}

std::vector<paddle::Tensor> AddNormBackward(const paddle::Tensor& xhat, const paddle::Tensor& rstd, const paddle::Tensor& gamma,
                                            const paddle::Tensor& dy, float epsilon, float p, int64_t seed) {
  auto dx = paddle::empty(xhat.shape(), xhat.dtype(), xhat.place());
  auto dres = paddle::empty(xhat.shape(), xhat.dtype(), xhat.place());
  auto dbias = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dgamma = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dbeta = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  norm_backward(xhat, rstd, gamma, dy, pf::Dropout(p, seed), dres.data<float>(), dx.data<float>(), dbias.data<float>(),
                dgamma.data<float>(), dbeta.data<float>());
  return {dx, dbias, dres, dgamma, dbeta};
}

std::vector<paddle::Tensor> LayerNormForward(const paddle::Tensor& x, const paddle::Tensor& gamma, const paddle::Tensor& beta,
                                             float epsilon) {
  for (auto* t : {&x, &gamma, &beta}) check_cpu_float(*t, "layer_norm input");
  return norm_forward(x, nullptr, nullptr, gamma, beta, epsilon, pf::Dropout(0.f, 0));
}

std::vector<paddle::Tensor> LayerNormBackward(const paddle::Tensor& xhat, const paddle::Tensor& rstd, const paddle::Tensor& gamma,
                                              const paddle::Tensor& dy, float epsilon) {
  auto dx = paddle::empty(xhat.shape(), xhat.dtype(), xhat.place());
  auto dgamma = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dbeta = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  norm_backward(xhat, rstd, gamma, dy, pf::Dropout(0.f, 0), dx.data<float>(), nullptr, nullptr, dgamma.data<float>(),
                dbeta.data<float>());
  return {dx, dgamma, dbeta};
}

// ------------------------------------------------------------------------------------------------
// shapes and dtypes (static graph and paddle 3's checks)
// ------------------------------------------------------------------------------------------------
std::vector<std::vector<int64_t>> SameShape(const std::vector<int64_t>& x) { return {x}; }
std::vector<paddle::DataType> SameType(const paddle::DataType& x) { return {x}; }
std::vector<std::vector<int64_t>> BiasGeluShape(const std::vector<int64_t>& x, const std::vector<int64_t>& b) { return {x}; }
std::vector<paddle::DataType> BiasGeluType(const paddle::DataType& x, const paddle::DataType& b) { return {x}; }
std::vector<std::vector<int64_t>> AddNormShape(const std::vector<int64_t>& x, const std::vector<int64_t>& b,
                                               const std::vector<int64_t>& r, const std::vector<int64_t>& g,
                                               const std::vector<int64_t>& beta) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < x.size(); ++i) rows *= x[i];
  return {x, x, {rows}};
}
std::vector<std::vector<int64_t>> LayerNormShape(const std::vector<int64_t>& x, const std::vector<int64_t>& g,
                                                 const std::vector<int64_t>& beta) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < x.size(); ++i) rows *= x[i];
  return {x, x, {rows}};
}
std::vector<paddle::DataType> LayerNormType(const paddle::DataType& x, const paddle::DataType& g, const paddle::DataType& beta) {
  return {x, x, x};
}
std::vector<paddle::DataType> AddNormType(const paddle::DataType& x, const paddle::DataType& b, const paddle::DataType& r,
                                          const paddle::DataType& g, const paddle::DataType& beta) {
  return {x, x, x};
}

}  // namespace

PD_BUILD_OP(pf_dropout)
    .Inputs({"X"})
    .Outputs({"Out"})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(DropoutForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SameShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SameType));

PD_BUILD_GRAD_OP(pf_dropout)
    .Inputs({paddle::Grad("Out")})
    .Outputs({paddle::Grad("X")})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(DropoutBackward));

PD_BUILD_OP(pf_bias_gelu)
    .Inputs({"X", "Bias"})
    .Outputs({"Out"})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(BiasGeluForward))
    .SetInferShapeFn(PD_INFER_SHAPE(BiasGeluShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(BiasGeluType));

PD_BUILD_GRAD_OP(pf_bias_gelu)
    .Inputs({"X", "Bias", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Bias")})
    .Attrs({"p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(BiasGeluBackward));

PD_BUILD_OP(pf_add_norm)
    .Inputs({"X", "Bias", "Residual", "Gamma", "Beta"})
    .Outputs({"Out", "Xhat", "Rstd"})
    .Attrs({"epsilon: float", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(AddNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(AddNormShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(AddNormType));

PD_BUILD_GRAD_OP(pf_add_norm)
    .Inputs({"Xhat", "Rstd", "Gamma", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Bias"), paddle::Grad("Residual"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"epsilon: float", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(AddNormBackward));

PD_BUILD_OP(pf_layer_norm)
    .Inputs({"X", "Gamma", "Beta"})
    .Outputs({"Out", "Xhat", "Rstd"})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormForward))
    .SetInferShapeFn(PD_INFER_SHAPE(LayerNormShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(LayerNormType));

PD_BUILD_GRAD_OP(pf_layer_norm)
    .Inputs({"Xhat", "Rstd", "Gamma", paddle::Grad("Out")})
    .Outputs({paddle::Grad("X"), paddle::Grad("Gamma"), paddle::Grad("Beta")})
    .Attrs({"epsilon: float"})
    .SetKernelFn(PD_KERNEL(LayerNormBackward));
