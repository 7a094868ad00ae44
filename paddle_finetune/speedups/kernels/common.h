// Shared by the CPU kernels of paddle_finetune.speedups (compiled at first use by speedups/native.py):
// the thread count, the dropout bits, vectorizable exp/erf, a register-blocked small GEMM, and column sums
// whose result does not depend on the thread count.
//
// Everything is plain C++ that GCC vectorizes for the CPU it is compiled on (-O3 -march=native): the
// float vectors below are 16 lanes wide, which is one AVX-512 register or two AVX2 ones.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "paddle/extension.h"

namespace pf {

// Math threads for these kernels: set once from Python (native.py -> pf_set_threads) to the run's
// cpu_threads(), because the OpenMP runtime's own default here is what paddle's import left in
// OMP_NUM_THREADS (1).
//
// Worksharing loops use schedule(static) or schedule(monotonic: dynamic, ...), never a plain dynamic one:
// GCC emits a plain dynamic schedule as GOMP_loop_nonmonotonic_dynamic_*, which paddle's libiomp5 does not
// define, so it binds to libgomp's, which sees no team and gives each thread every iteration (measured:
// two threads each ran the whole attention, as slow as one). pf_parallel_iterations checks this at load.
extern int g_threads;
inline int threads() { return g_threads < 1 ? 1 : g_threads; }

// ---------------------------------------------------------------------------------------------
// Dropout bits: a counter-based hash of (seed, element index), so a mask is a pure function of the
// seed. The forward and the backward (and a recompute replay) draw the same mask without storing
// it, and the result does not depend on how elements are split across threads. The seed is drawn
// per call from runtime.rng.dropout_rng, which every checkpoint saves (exact resume).
// ---------------------------------------------------------------------------------------------
inline uint32_t mix32(uint32_t x) {  // "lowbias32" (C. Wellons): a full-avalanche 32-bit hash
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

struct Dropout {
  uint32_t k0 = 0, k1 = 0, threshold = 0;  // keep when the top 24 bits are >= threshold
  float scale = 1.f;
  bool active = false;
  Dropout(float p, int64_t seed) {
    if (p <= 0.f) return;
    active = true;
    k0 = mix32(static_cast<uint32_t>(seed) ^ 0x9e3779b9U);
    k1 = mix32(static_cast<uint32_t>(static_cast<uint64_t>(seed) >> 32) ^ 0x85ebca6bU);
    if (p >= 1.f) {  // paddle: everything dropped, output 0
      threshold = 1U << 24;
      scale = 0.f;
    } else {
      threshold = static_cast<uint32_t>(std::llround(static_cast<double>(p) * 16777216.0));
      scale = static_cast<float>(1.0 / (1.0 - static_cast<double>(p)));
    }
  }
  // The multiplier of element `index`: scale where kept, 0 where dropped.
  inline float factor(uint64_t index) const {
    return factor32(static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32) ^ k1);
  }
  inline float factor32(uint32_t low, uint32_t high_key) const {
    uint32_t h = mix32(low ^ k0);
    h = mix32(h + high_key);
    return (h >> 8) >= threshold ? scale : 0.f;
  }
  // factors[i] = factor(base + i) for i < n, in a loop GCC vectorizes (the high word is constant
  // within a run that does not cross a multiple of 2^32).
  void fill(int64_t base, int64_t n, float* factors) const {
    int64_t i = 0;
    while (i < n) {
      uint64_t index = static_cast<uint64_t>(base + i);
      uint64_t run = std::min<uint64_t>(static_cast<uint64_t>(n - i), (uint64_t{1} << 32) - (index & 0xffffffffULL));
      uint32_t low = static_cast<uint32_t>(index), high_key = static_cast<uint32_t>(index >> 32) ^ k1;
      for (uint64_t t = 0; t < run; ++t) factors[i + t] = factor32(low + static_cast<uint32_t>(t), high_key);
      i += static_cast<int64_t>(run);
    }
  }
};

// ---------------------------------------------------------------------------------------------
// exp and erf that vectorize (no branches, no library calls)
// ---------------------------------------------------------------------------------------------
// expf: Cody-Waite range reduction and Cephes' degree-6 polynomial; within 2 ulp of std::exp on
// [-87.3, 88.3]. Below -87.3 it returns exactly 0 (masked scores), above 88.3 +inf (softmax and the
// GELU gradient only ever take arguments <= 0).
inline float fast_exp(float x) {
  const float hi = 88.3762626647949f, lo = -87.3365447505531f;
  float xc = std::min(std::max(x, lo), hi);
  float n = std::floor(xc * 1.44269504088896341f + 0.5f);
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;  // 2^n
  float out = p * __builtin_bit_cast(float, bits);
  out = x < lo ? 0.f : out;
  return x > hi ? std::numeric_limits<float>::infinity() : out;
}

// erf: a rational minimax approximation on [-4, 4] (Eigen's generic_fast_erf_float); |error| ~1e-7,
// and +-1 outside, where float erf is +-1 anyway.
inline float fast_erf(float a) {
  float x = std::min(std::max(a, -4.f), 4.f);
  float x2 = x * x;
  float p = -2.72614225801306e-10f;
  p = p * x2 + 2.77068142495902e-08f;
  p = p * x2 + -2.10102402082508e-06f;
  p = p * x2 + -5.69250639462346e-05f;
  p = p * x2 + -7.34990630326855e-04f;
  p = p * x2 + -2.95459980854025e-03f;
  p = p * x2 + -1.60960333262415e-02f;
  p = p * x;
  float q = -1.45660718464996e-05f;
  q = q * x2 + -2.13374055278905e-04f;
  q = q * x2 + -1.68282697438203e-03f;
  q = q * x2 + -7.37332916720468e-03f;
  q = q * x2 + -1.42647390514189e-02f;
  return p / q;
}

// paddle's gelu with approximate=False: 0.5 x (1 + erf(x / sqrt(2))), and its derivative.
inline float gelu(float x) { return 0.5f * x * (1.f + fast_erf(x * 0.70710678118654752f)); }
inline float gelu_grad(float x) {
  return 0.5f * (1.f + fast_erf(x * 0.70710678118654752f)) + x * 0.3989422804014327f * fast_exp(-0.5f * x * x);
}

// ---------------------------------------------------------------------------------------------
// C (+)= op(A) . B for small row-major blocks: op(A) [M x K] is A (lda) or, with TransA, the transpose of a
// [K x M] A; B [K x N] (ldb), C [M x N] (ldc), with N a multiple of 16. Register-blocked: MR rows by NV 16-float
// vectors of C stay in registers over the K loop (with TransA the MR values of A a step reads are adjacent).
// ---------------------------------------------------------------------------------------------
typedef float v16 __attribute__((vector_size(64), aligned(4), may_alias));

#if defined(__AVX512F__)
constexpr int kMR = 6, kNV = 2;  // 12 of 32 zmm registers accumulate
#else
constexpr int kMR = 4, kNV = 1;  // AVX2: one v16 is two ymm registers, 8 of 16 accumulate
#endif

template <int MR, int NV, bool TransA>
inline void micro_kernel(int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                         bool accumulate) {
  v16 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) {
      if (accumulate)
        acc[r][v] = *reinterpret_cast<const v16*>(C + r * ldc + v * 16);
      else
        acc[r][v] = v16{};
    }
  for (int k = 0; k < K; ++k) {
    const float* b = B + k * ldb;
    v16 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = *reinterpret_cast<const v16*>(b + v * 16);
    for (int r = 0; r < MR; ++r) {
      const float a = TransA ? A[k * lda + r] : A[r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * bv[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<v16*>(C + r * ldc + v * 16) = acc[r][v];
}

template <int MR, bool TransA>
inline void gemm_rows(int N, int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                      bool accumulate) {
  int j = 0;
  for (; j + 16 * kNV <= N; j += 16 * kNV) micro_kernel<MR, kNV, TransA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
  for (; j < N; j += 16) micro_kernel<MR, 1, TransA>(K, A, lda, B + j, ldb, C + j, ldc, accumulate);
}

// N must be a multiple of 16; any M and K.
template <bool TransA = false>
inline void small_gemm(int M, int N, int K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                       bool accumulate) {
  auto rows = [&](int i) { return TransA ? A + i : A + i * lda; };
  int i = 0;
  for (; i + kMR <= M; i += kMR) gemm_rows<kMR, TransA>(N, K, rows(i), lda, B, ldb, C + i * ldc, ldc, accumulate);
  if (kMR > 4 && i + 4 <= M) {
    gemm_rows<4, TransA>(N, K, rows(i), lda, B, ldb, C + i * ldc, ldc, accumulate);
    i += 4;
  }
  if (i + 2 <= M) {
    gemm_rows<2, TransA>(N, K, rows(i), lda, B, ldb, C + i * ldc, ldc, accumulate);
    i += 2;
  }
  if (i < M) gemm_rows<1, TransA>(N, K, rows(i), lda, B, ldb, C + i * ldc, ldc, accumulate);
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// Reductions in 16 lanes (GCC does not reorder float sums by itself): deterministic for a given build.
inline v16 load16(const float* p) { return *reinterpret_cast<const v16*>(p); }
inline float lanes_sum(v16 v) {
  float s = 0.f;
  for (int i = 0; i < 16; ++i) s += v[i];
  return s;
}
inline float sum_of(const float* x, int64_t n) {
  v16 acc{};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) acc += load16(x + j);
  float s = lanes_sum(acc);
  for (; j < n; ++j) s += x[j];
  return s;
}
inline float dot_of(const float* x, const float* y, int64_t n) {
  v16 acc{};
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) acc += load16(x + j) * load16(y + j);
  float s = lanes_sum(acc);
  for (; j < n; ++j) s += x[j] * y[j];
  return s;
}
inline float max_of(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t j = 0;
  if (n >= 16) {
    v16 acc = load16(x);
    for (j = 16; j + 16 <= n; j += 16) {
      v16 v = load16(x + j);
      acc = acc > v ? acc : v;
    }
    for (int i = 0; i < 16; ++i) m = std::max(m, acc[i]);
  }
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// ---------------------------------------------------------------------------------------------
// Column sums (bias gradients) that do not depend on the thread count: rows are cut into fixed
// chunks, each chunk is summed by one thread, and the chunks are added in order.
// ---------------------------------------------------------------------------------------------
constexpr int64_t kChunkRows = 64;

struct ColumnSums {
  int64_t rows, cols, chunks;
  std::vector<float> partial;  // [chunks x cols]
  ColumnSums(int64_t rows_, int64_t cols_) : rows(rows_), cols(cols_), chunks((rows_ + kChunkRows - 1) / kChunkRows) {
    partial.assign(static_cast<size_t>(std::max<int64_t>(chunks, 1) * cols), 0.f);
  }
  float* chunk(int64_t c) { return partial.data() + c * cols; }
  void finish(float* out) const {
    for (int64_t j = 0; j < cols; ++j) out[j] = 0.f;
    for (int64_t c = 0; c < chunks; ++c) {
      const float* p = partial.data() + c * cols;
      for (int64_t j = 0; j < cols; ++j) out[j] += p[j];
    }
  }
};

// Rows and columns of a tensor seen as a matrix over its last axis.
inline int64_t last_dim(const paddle::Tensor& t) { return t.shape().back(); }
inline int64_t leading_rows(const paddle::Tensor& t) { return t.numel() / std::max<int64_t>(last_dim(t), 1); }

}  // namespace pf
