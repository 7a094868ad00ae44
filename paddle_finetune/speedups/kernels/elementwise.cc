// Fused elementwise CPU kernels (paddle custom operators), each with its backward:
//   pf_dropout            y = x * mask / (1 - p)
//   pf_bias_gelu          y = dropout(gelu(x + b))                      (the first FFN linear's epilogue)
//   pf_add_norm           y = layer_norm(residual + dropout(x + b))     (post-LN "add & norm")
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
// pf_add_norm: x [N, D] (a linear's output without its bias), bias [D], residual [N, D], gamma/beta [D]
//   s = residual + dropout(x + bias);  y = (s - mean) * rstd * gamma + beta
// The backward needs only xhat = (s - mean) * rstd, rstd, gamma and the seed.
// ------------------------------------------------------------------------------------------------
std::vector<paddle::Tensor> AddNormForward(const paddle::Tensor& x, const paddle::Tensor& bias, const paddle::Tensor& residual,
                                           const paddle::Tensor& gamma, const paddle::Tensor& beta, float epsilon, float p,
                                           int64_t seed) {
  for (auto* t : {&x, &bias, &residual, &gamma, &beta}) check_cpu_float(*t, "add_norm input");
  const int64_t cols = pf::last_dim(x), rows = pf::leading_rows(x);
  PD_CHECK(residual.numel() == x.numel(), "residual and x differ in size");
  PD_CHECK(bias.numel() == cols && gamma.numel() == cols && beta.numel() == cols, "bias/gamma/beta must have ", cols, " values");
  auto out = paddle::empty(x.shape(), x.dtype(), x.place());
  auto xhat = paddle::empty(x.shape(), x.dtype(), x.place());
  auto rstd = paddle::empty({rows}, x.dtype(), x.place());
  const float* xp = x.data<float>();
  const float* bp = bias.data<float>();
  const float* rp = residual.data<float>();
  const float* gp = gamma.data<float>();
  const float* betap = beta.data<float>();
  float* op = out.data<float>();
  float* hp = xhat.data<float>();
  float* sp = rstd.data<float>();
  pf::Dropout d(p, seed);
  const float inv_cols = 1.f / static_cast<float>(cols);
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(d.active ? cols : 0);
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = xp + r * cols;
      const float* rr = rp + r * cols;
      float* hr = hp + r * cols;
      float* yr = op + r * cols;
      if (d.active) {
        d.fill(r * cols, cols, f.data());
        for (int64_t j = 0; j < cols; ++j) hr[j] = rr[j] + (xr[j] + bp[j]) * f[j];
      } else {
        for (int64_t j = 0; j < cols; ++j) hr[j] = rr[j] + (xr[j] + bp[j]);
      }
      const float mean = pf::sum_of(hr, cols) * inv_cols;
      for (int64_t j = 0; j < cols; ++j) yr[j] = hr[j] - mean;  // centered, in the output row for now
      const float inv = 1.f / std::sqrt(pf::dot_of(yr, yr, cols) * inv_cols + epsilon);
      sp[r] = inv;
      for (int64_t j = 0; j < cols; ++j) {
        const float h = yr[j] * inv;
        hr[j] = h;
        yr[j] = h * gp[j] + betap[j];
      }
    }
  }
  return {out, xhat, rstd};
}

std::vector<paddle::Tensor> AddNormBackward(const paddle::Tensor& xhat, const paddle::Tensor& rstd, const paddle::Tensor& gamma,
                                            const paddle::Tensor& dy, float epsilon, float p, int64_t seed) {
  const int64_t cols = pf::last_dim(xhat), rows = pf::leading_rows(xhat);
  auto dx = paddle::empty(xhat.shape(), xhat.dtype(), xhat.place());
  auto dres = paddle::empty(xhat.shape(), xhat.dtype(), xhat.place());
  auto dbias = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dgamma = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  auto dbeta = paddle::empty(gamma.shape(), gamma.dtype(), gamma.place());
  const float* hp = xhat.data<float>();
  const float* sp = rstd.data<float>();
  const float* gp = gamma.data<float>();
  const float* dyp = dy.data<float>();
  float* dxp = dx.data<float>();
  float* drp = dres.data<float>();
  pf::Dropout d(p, seed);
  pf::ColumnSums sum_db(rows, cols), sum_dg(rows, cols), sum_dbeta(rows, cols);
  const float inv_cols = 1.f / static_cast<float>(cols);
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> f(d.active ? cols : 0), g(cols);
#pragma omp for schedule(static)
    for (int64_t c = 0; c < sum_db.chunks; ++c) {
      float* acc_db = sum_db.chunk(c);
      float* acc_dg = sum_dg.chunk(c);
      float* acc_dbeta = sum_dbeta.chunk(c);
      for (int64_t r = c * pf::kChunkRows; r < std::min(rows, (c + 1) * pf::kChunkRows); ++r) {
        const float* hr = hp + r * cols;
        const float* dyr = dyp + r * cols;
        float* dxr = dxp + r * cols;
        float* drr = drp + r * cols;
        for (int64_t j = 0; j < cols; ++j) g[j] = dyr[j] * gp[j];
        const float a = pf::sum_of(g.data(), cols) * inv_cols, b = pf::dot_of(g.data(), hr, cols) * inv_cols;
        const float inv = sp[r];
        for (int64_t j = 0; j < cols; ++j) drr[j] = inv * (g[j] - a - hr[j] * b);
        if (d.active) {
          d.fill(r * cols, cols, f.data());
          for (int64_t j = 0; j < cols; ++j) dxr[j] = drr[j] * f[j];
        } else {
          for (int64_t j = 0; j < cols; ++j) dxr[j] = drr[j];
        }
        for (int64_t j = 0; j < cols; ++j) {
          acc_db[j] += dxr[j];
          acc_dg[j] += dyr[j] * hr[j];
          acc_dbeta[j] += dyr[j];
        }
      }
    }
  }
  sum_db.finish(dbias.data<float>());
  sum_dg.finish(dgamma.data<float>());
  sum_dbeta.finish(dbeta.data<float>());
  return {dx, dbias, dres, dgamma, dbeta};
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
