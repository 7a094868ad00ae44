// Multi-head attention on the CPU (paddle custom operators), forward and backward, that never holds
// more than one block of scores per thread:
//   pf_self_attention(QKV [B, L, 3E], Bias [3E], Mask)              -> Out [B, L, E], Lse [B, H, L]
//   pf_cross_attention(Q [B, Lq, E], QBias [E], KV [B, Lk, 2E], KVBias [2E], Mask) -> Out, Lse
// QKV/Q/KV are the projections' outputs without their biases (added here, and their gradients summed
// here). Heads are read in place from the packed rows: no reshape, transpose or split of q, k and v.
// Mask is additive, of shape [Bm, Hm, Lqm, Lk] with each of Bm, Hm, Lqm either 1 or full (paddle's
// broadcasting); a [1, 1, 1, 1] zero mask means none. Softmax then dropout on the probabilities, then
// the product with V: nn.MultiHeadAttention's math. The backward recomputes each block's probabilities
// from Lse (the log of each softmax row's normalizer) instead of storing them, and the dropout mask
// from its seed.
//
// Keys after the last one whose mask is above -1e4 in a batch row (right padding, paddlenlp's mask
// value is -1e4) are skipped when the mask is the same for every head and query: exp(score - 1e4 -
// max) is exactly 0 in float32 for any scores within 1e4 of each other, so the result is unchanged.
#include "common.h"

namespace {

constexpr int64_t kQueryBlock = 64;

struct Operand {  // a [B, L, H, dh] operand inside packed rows of `row` floats, starting at column `offset`
  const float* data = nullptr;
  const float* bias = nullptr;  // [H * dh], this operand's part
  float* grad = nullptr;
  int64_t row = 0, offset = 0;
  inline int64_t at(int64_t b, int64_t l, int64_t len, int64_t h, int64_t dh) const {
    return (b * len + l) * row + offset + h * dh;
  }
};

struct Problem {
  int64_t B = 0, H = 0, Lq = 0, Lk = 0, dh = 0;
  float scale = 1.f;
  Operand q, k, v;
  const float* mask = nullptr;
  int64_t mb = 0, mh = 0, mi = 0, mj = 0;  // mask strides, 0 where broadcast
  bool mask_per_key_only = true;           // the same for every head and query
  std::vector<int64_t> key_len;            // keys computed per batch row
  pf::Dropout drop{0.f, 0};
};

void set_mask(Problem& pr, const paddle::Tensor& mask) {
  PD_CHECK(mask.is_cpu() && mask.dtype() == paddle::DataType::FLOAT32, "the attention mask must be a float32 CPU tensor");
  auto s = mask.shape();
  PD_CHECK(s.size() == 4, "the attention mask must be 4-D [B|1, H|1, Lq|1, Lk|1]");
  const int64_t full[4] = {pr.B, pr.H, pr.Lq, pr.Lk};
  for (int d = 0; d < 4; ++d) PD_CHECK(s[d] == 1 || s[d] == full[d], "attention mask dim ", d, " is ", s[d], ", expected 1 or ", full[d]);
  pr.mj = s[3] == 1 ? 0 : 1;
  pr.mi = s[2] == 1 ? 0 : s[3];
  pr.mh = s[1] == 1 ? 0 : s[2] * s[3];
  pr.mb = s[0] == 1 ? 0 : s[1] * s[2] * s[3];
  pr.mask = mask.data<float>();
  pr.mask_per_key_only = pr.mi == 0 && pr.mh == 0;
  pr.key_len.assign(pr.B, pr.Lk);
  if (pr.mask_per_key_only && pr.mj == 1) {
    for (int64_t b = 0; b < pr.B; ++b) {
      int64_t last = -1;
      for (int64_t j = 0; j < pr.Lk; ++j)
        if (pr.mask[b * pr.mb + j] > -1e4f) last = j;
      pr.key_len[b] = last < 0 ? pr.Lk : last + 1;  // every key masked: compute them all, as paddle does
    }
  }
}

// Per-thread scratch, sized once per call.
struct Scratch {
  std::vector<float> kt, kp, vt, vp, qp, dop, s, dp, pt, otile, dk, dv, fac;
  Scratch(const Problem& pr, bool backward) {
    const int64_t klp = pf::round_up(pr.Lk, 16), dhp = pf::round_up(pr.dh, 16);
    kt.resize(pr.dh * klp);
    vp.resize(pr.Lk * dhp);
    qp.resize(kQueryBlock * dhp);
    s.resize(kQueryBlock * klp);
    otile.resize(kQueryBlock * dhp);
    fac.resize(klp);
    if (backward) {
      kp.resize(pr.Lk * dhp);
      vt.resize(pr.dh * klp);
      dop.resize(kQueryBlock * dhp);
      dp.resize(kQueryBlock * klp);
      pt.resize(kQueryBlock * klp);  // dropped probabilities, with attention dropout
      dk.resize(pr.Lk * dhp);
      dv.resize(pr.Lk * dhp);
    }
  }
};

// K or V (+ bias) of head h as [dh x klp] (transposed, zero columns past klen): 16 keys at a time, each output
// row written 16 floats at once from 16 input rows at a fixed stride (a gather).
void pack_transposed(const Operand& op, const Problem& pr, int64_t b, int64_t h, int64_t klen, int64_t klp, float* out) {
  const float* bias = op.bias + h * pr.dh;
  const int64_t stride = op.row;
  for (int64_t j0 = 0; j0 < klp; j0 += 16) {
    const int64_t nj = std::max<int64_t>(0, std::min<int64_t>(16, klen - j0));
    const float* src = op.data + op.at(b, std::min(j0, klen > 0 ? klen - 1 : 0), pr.Lk, h, pr.dh);
    for (int64_t d = 0; d < pr.dh; ++d) {
      float* o = out + d * klp + j0;
      const float bd = bias[d];
      if (nj == 16) {
        for (int64_t jj = 0; jj < 16; ++jj) o[jj] = src[jj * stride + d] + bd;
      } else {
        for (int64_t jj = 0; jj < 16; ++jj) o[jj] = jj < nj ? src[jj * stride + d] + bd : 0.f;
      }
    }
  }
}

// rows [l0, l0 + n) of an operand (+ bias) of head h as [n x dhp] (zero columns past dh), times `mul`.
void pack_rows(const Operand& op, const Problem& pr, int64_t len, int64_t b, int64_t h, int64_t l0, int64_t n, int64_t dhp,
               float mul, float* out) {
  const float* bias = op.bias + h * pr.dh;
  for (int64_t i = 0; i < n; ++i) {
    const float* src = op.data + op.at(b, l0 + i, len, h, pr.dh);
    float* dst = out + i * dhp;
    for (int64_t d = 0; d < pr.dh; ++d) dst[d] = (src[d] + bias[d]) * mul;
    for (int64_t d = pr.dh; d < dhp; ++d) dst[d] = 0.f;
  }
}

// S = scaled Q . K^T + mask for query rows [i0, i0 + m) of (b, h); columns past klen are -inf.
void scores(const Problem& pr, Scratch& w, int64_t b, int64_t h, int64_t i0, int64_t m, int64_t klen, int64_t klp,
            int64_t dhp) {
  pf::small_gemm(m, klp, pr.dh, w.qp.data(), dhp, w.kt.data(), klp, w.s.data(), klp, false);
  for (int64_t i = 0; i < m; ++i) {
    float* srow = w.s.data() + i * klp;
    if (pr.mask != nullptr) {
      const float* mrow = pr.mask + b * pr.mb + h * pr.mh + (i0 + i) * pr.mi;
      if (pr.mj == 1) {
        for (int64_t j = 0; j < klen; ++j) srow[j] += mrow[j];
      } else {
        for (int64_t j = 0; j < klen; ++j) srow[j] += mrow[0];
      }
    }
    for (int64_t j = klen; j < klp; ++j) srow[j] = -std::numeric_limits<float>::infinity();
  }
}

inline uint64_t drop_index(const Problem& pr, int64_t b, int64_t h, int64_t i) {
  return static_cast<uint64_t>(((b * pr.H + h) * pr.Lq + i) * pr.Lk);
}

void forward_head(const Problem& pr, Scratch& w, int64_t b, int64_t h, float* out, float* lse, int64_t out_row) {
  const int64_t klen = pr.key_len[b], klp = pf::round_up(klen, 16), dhp = pf::round_up(pr.dh, 16);
  pack_transposed(pr.k, pr, b, h, klen, klp, w.kt.data());
  pack_rows(pr.v, pr, pr.Lk, b, h, 0, klen, dhp, 1.f, w.vp.data());
  for (int64_t i0 = 0; i0 < pr.Lq; i0 += kQueryBlock) {
    const int64_t m = std::min(kQueryBlock, pr.Lq - i0);
    pack_rows(pr.q, pr, pr.Lq, b, h, i0, m, dhp, pr.scale, w.qp.data());
    scores(pr, w, b, h, i0, m, klen, klp, dhp);
    for (int64_t i = 0; i < m; ++i) {
      float* srow = w.s.data() + i * klp;
      const float mx = pf::max_of(srow, klen);
      float* lse_at = lse + (b * pr.H + h) * pr.Lq + i0 + i;
      if (mx == -std::numeric_limits<float>::infinity()) {  // every key at -inf: zeros (paddle: NaN)
        std::fill(srow, srow + klp, 0.f);
        *lse_at = mx;
        continue;
      }
      for (int64_t j = 0; j < klp; ++j) srow[j] = pf::fast_exp(srow[j] - mx);
      const float sum = pf::sum_of(srow, klp);
      *lse_at = mx + std::log(sum);
      const float inv = 1.f / sum;
      for (int64_t j = 0; j < klp; ++j) srow[j] *= inv;
      if (pr.drop.active) {
        pr.drop.fill(drop_index(pr, b, h, i0 + i), klen, w.fac.data());
        for (int64_t j = 0; j < klen; ++j) srow[j] *= w.fac[j];
      }
    }
    pf::small_gemm(m, dhp, klen, w.s.data(), klp, w.vp.data(), dhp, w.otile.data(), dhp, false);
    for (int64_t i = 0; i < m; ++i)
      std::memcpy(out + (b * pr.Lq + i0 + i) * out_row + h * pr.dh, w.otile.data() + i * dhp, pr.dh * sizeof(float));
  }
}

void backward_head(const Problem& pr, Scratch& w, int64_t b, int64_t h, const float* out, const float* lse, const float* dout,
                   int64_t out_row) {
  const int64_t klen = pr.key_len[b], klp = pf::round_up(klen, 16), dhp = pf::round_up(pr.dh, 16);
  pack_transposed(pr.k, pr, b, h, klen, klp, w.kt.data());
  pack_transposed(pr.v, pr, b, h, klen, klp, w.vt.data());
  pack_rows(pr.k, pr, pr.Lk, b, h, 0, klen, dhp, 1.f, w.kp.data());
  std::fill(w.dk.begin(), w.dk.begin() + klen * dhp, 0.f);
  std::fill(w.dv.begin(), w.dv.begin() + klen * dhp, 0.f);
  for (int64_t i0 = 0; i0 < pr.Lq; i0 += kQueryBlock) {
    const int64_t m = std::min(kQueryBlock, pr.Lq - i0);
    pack_rows(pr.q, pr, pr.Lq, b, h, i0, m, dhp, pr.scale, w.qp.data());
    float dsum[kQueryBlock];
    for (int64_t i = 0; i < m; ++i) {  // dO (padded) and D_i = dO_i . O_i
      const float* g = dout + (b * pr.Lq + i0 + i) * out_row + h * pr.dh;
      const float* o = out + (b * pr.Lq + i0 + i) * out_row + h * pr.dh;
      float* dst = w.dop.data() + i * dhp;
      for (int64_t d = 0; d < pr.dh; ++d) dst[d] = g[d];
      for (int64_t d = pr.dh; d < dhp; ++d) dst[d] = 0.f;
      dsum[i] = pf::dot_of(g, o, pr.dh);
    }
    scores(pr, w, b, h, i0, m, klen, klp, dhp);
    pf::small_gemm(m, klp, pr.dh, w.dop.data(), dhp, w.vt.data(), klp, w.dp.data(), klp, false);  // dO . V^T
    for (int64_t i = 0; i < m; ++i) {
      float* p = w.s.data() + i * klp;
      float* dp = w.dp.data() + i * klp;
      const float l = lse[(b * pr.H + h) * pr.Lq + i0 + i];
      if (l == -std::numeric_limits<float>::infinity()) {
        std::fill(p, p + klp, 0.f);
        std::fill(dp, dp + klp, 0.f);
      } else {
        for (int64_t j = 0; j < klp; ++j) p[j] = pf::fast_exp(p[j] - l);
      }
      if (pr.drop.active) {
        pr.drop.fill(drop_index(pr, b, h, i0 + i), klen, w.fac.data());
        for (int64_t j = 0; j < klen; ++j) dp[j] *= w.fac[j];  // dP = dropout'(dO . V^T)
      }
      if (pr.drop.active) {  // the dropped probabilities V saw, for dV
        float* pd = w.pt.data() + i * klp;
        for (int64_t j = 0; j < klen; ++j) pd[j] = p[j] * w.fac[j];
      }
      const float di = dsum[i];
      for (int64_t j = 0; j < klen; ++j) dp[j] = p[j] * (dp[j] - di);  // dS
      for (int64_t j = klen; j < klp; ++j) dp[j] = 0.f;
    }
    const float* pd = pr.drop.active ? w.pt.data() : w.s.data();
    pf::small_gemm<true>(klen, dhp, m, pd, klp, w.dop.data(), dhp, w.dv.data(), dhp, true);          // dV += P^T dO
    pf::small_gemm<true>(klen, dhp, m, w.dp.data(), klp, w.qp.data(), dhp, w.dk.data(), dhp, true);   // dK += dS^T Qs
    pf::small_gemm(m, dhp, klen, w.dp.data(), klp, w.kp.data(), dhp, w.otile.data(), dhp, false);     // dQs = dS K
    for (int64_t i = 0; i < m; ++i) {
      float* dst = pr.q.grad + pr.q.at(b, i0 + i, pr.Lq, h, pr.dh);
      const float* src = w.otile.data() + i * dhp;
      for (int64_t d = 0; d < pr.dh; ++d) dst[d] = src[d] * pr.scale;
    }
  }
  for (int64_t j = 0; j < pr.Lk; ++j) {
    float* dk = pr.k.grad + pr.k.at(b, j, pr.Lk, h, pr.dh);
    float* dv = pr.v.grad + pr.v.at(b, j, pr.Lk, h, pr.dh);
    if (j < klen) {
      std::memcpy(dk, w.dk.data() + j * dhp, pr.dh * sizeof(float));
      std::memcpy(dv, w.dv.data() + j * dhp, pr.dh * sizeof(float));
    } else {  // skipped keys: probability exactly 0, so no gradient
      std::fill(dk, dk + pr.dh, 0.f);
      std::fill(dv, dv + pr.dh, 0.f);
    }
  }
}

void run_forward(const Problem& pr, float* out, float* lse) {
  const int64_t tasks = pr.B * pr.H, out_row = pr.H * pr.dh;
#pragma omp parallel num_threads(pf::threads())
  {
    Scratch w(pr, false);
#pragma omp for schedule(monotonic: dynamic, 1)  // see common.h: never nonmonotonic
    for (int64_t t = 0; t < tasks; ++t) forward_head(pr, w, t / pr.H, t % pr.H, out, lse, out_row);
  }
}

void run_backward(const Problem& pr, const float* out, const float* lse, const float* dout) {
  const int64_t tasks = pr.B * pr.H, out_row = pr.H * pr.dh;
#pragma omp parallel num_threads(pf::threads())
  {
    Scratch w(pr, true);
#pragma omp for schedule(monotonic: dynamic, 1)  // see common.h: never nonmonotonic
    for (int64_t t = 0; t < tasks; ++t) backward_head(pr, w, t / pr.H, t % pr.H, out, lse, dout, out_row);
  }
}

// Column sums of a [rows x cols] gradient (a bias gradient), in fixed chunks.
void bias_grad(const float* g, int64_t rows, int64_t cols, float* out) {
  pf::ColumnSums sums(rows, cols);
#pragma omp parallel for num_threads(pf::threads()) schedule(static)
  for (int64_t c = 0; c < sums.chunks; ++c) {
    float* acc = sums.chunk(c);
    for (int64_t r = c * pf::kChunkRows; r < std::min(rows, (c + 1) * pf::kChunkRows); ++r)
      for (int64_t j = 0; j < cols; ++j) acc[j] += g[r * cols + j];
  }
  sums.finish(out);
}

void check_input(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu() && t.dtype() == paddle::DataType::FLOAT32, name, " must be a float32 CPU tensor");
}

// ------------------------------------------------------------------------------------------------
// self-attention: QKV [B, L, 3E] = [q heads | k heads | v heads]
// ------------------------------------------------------------------------------------------------
Problem self_problem(const paddle::Tensor& qkv, const paddle::Tensor& bias, const paddle::Tensor& mask, int num_heads, float p,
                     int64_t seed) {
  check_input(qkv, "qkv");
  check_input(bias, "qkv bias");
  auto s = qkv.shape();
  PD_CHECK(s.size() == 3 && s[2] % (3 * num_heads) == 0, "qkv must be [B, L, 3 * heads * head_dim]");
  Problem pr;
  pr.B = s[0];
  pr.H = num_heads;
  pr.Lq = pr.Lk = s[1];
  const int64_t e = s[2] / 3;
  pr.dh = e / num_heads;
  PD_CHECK(bias.numel() == 3 * e, "qkv bias must have ", 3 * e, " values");
  pr.scale = 1.f / std::sqrt(static_cast<float>(pr.dh));
  const float* base = qkv.data<float>();
  const float* bb = bias.data<float>();
  pr.q = {base, bb, nullptr, 3 * e, 0};
  pr.k = {base, bb + e, nullptr, 3 * e, e};
  pr.v = {base, bb + 2 * e, nullptr, 3 * e, 2 * e};
  set_mask(pr, mask);
  pr.drop = pf::Dropout(p, seed);
  return pr;
}

std::vector<paddle::Tensor> SelfAttentionForward(const paddle::Tensor& qkv, const paddle::Tensor& bias, const paddle::Tensor& mask,
                                                 int num_heads, float p, int64_t seed) {
  Problem pr = self_problem(qkv, bias, mask, num_heads, p, seed);
  auto out = paddle::empty({pr.B, pr.Lq, pr.H * pr.dh}, qkv.dtype(), qkv.place());
  auto lse = paddle::empty({pr.B, pr.H, pr.Lq}, qkv.dtype(), qkv.place());
  run_forward(pr, out.data<float>(), lse.data<float>());
  return {out, lse};
}

std::vector<paddle::Tensor> SelfAttentionBackward(const paddle::Tensor& qkv, const paddle::Tensor& bias, const paddle::Tensor& mask,
                                                  const paddle::Tensor& out, const paddle::Tensor& lse, const paddle::Tensor& dout,
                                                  int num_heads, float p, int64_t seed) {
  Problem pr = self_problem(qkv, bias, mask, num_heads, p, seed);
  auto dqkv = paddle::empty(qkv.shape(), qkv.dtype(), qkv.place());
  auto dbias = paddle::empty(bias.shape(), bias.dtype(), bias.place());
  float* g = dqkv.data<float>();
  pr.q.grad = pr.k.grad = pr.v.grad = g;
  run_backward(pr, out.data<float>(), lse.data<float>(), dout.data<float>());
  bias_grad(g, pr.B * pr.Lq, qkv.shape()[2], dbias.data<float>());
  return {dqkv, dbias};
}

// ------------------------------------------------------------------------------------------------
// cross-attention: Q [B, Lq, E], KV [B, Lk, 2E] = [k heads | v heads]
// ------------------------------------------------------------------------------------------------
Problem cross_problem(const paddle::Tensor& q, const paddle::Tensor& qbias, const paddle::Tensor& kv, const paddle::Tensor& kvbias,
                      const paddle::Tensor& mask, int num_heads, float p, int64_t seed) {
  check_input(q, "q");
  check_input(kv, "kv");
  check_input(qbias, "q bias");
  check_input(kvbias, "kv bias");
  auto sq = q.shape();
  auto skv = kv.shape();
  PD_CHECK(sq.size() == 3 && skv.size() == 3 && sq[0] == skv[0] && skv[2] == 2 * sq[2] && sq[2] % num_heads == 0,
           "q must be [B, Lq, heads * head_dim] and kv [B, Lk, 2 * heads * head_dim]");
  Problem pr;
  pr.B = sq[0];
  pr.H = num_heads;
  pr.Lq = sq[1];
  pr.Lk = skv[1];
  const int64_t e = sq[2];
  pr.dh = e / num_heads;
  PD_CHECK(qbias.numel() == e && kvbias.numel() == 2 * e, "q bias must have ", e, " values and kv bias ", 2 * e);
  pr.scale = 1.f / std::sqrt(static_cast<float>(pr.dh));
  pr.q = {q.data<float>(), qbias.data<float>(), nullptr, e, 0};
  pr.k = {kv.data<float>(), kvbias.data<float>(), nullptr, 2 * e, 0};
  pr.v = {kv.data<float>(), kvbias.data<float>() + e, nullptr, 2 * e, e};
  set_mask(pr, mask);
  pr.drop = pf::Dropout(p, seed);
  return pr;
}

std::vector<paddle::Tensor> CrossAttentionForward(const paddle::Tensor& q, const paddle::Tensor& qbias, const paddle::Tensor& kv,
                                                  const paddle::Tensor& kvbias, const paddle::Tensor& mask, int num_heads, float p,
                                                  int64_t seed) {
  Problem pr = cross_problem(q, qbias, kv, kvbias, mask, num_heads, p, seed);
  auto out = paddle::empty({pr.B, pr.Lq, pr.H * pr.dh}, q.dtype(), q.place());
  auto lse = paddle::empty({pr.B, pr.H, pr.Lq}, q.dtype(), q.place());
  run_forward(pr, out.data<float>(), lse.data<float>());
  return {out, lse};
}

std::vector<paddle::Tensor> CrossAttentionBackward(const paddle::Tensor& q, const paddle::Tensor& qbias, const paddle::Tensor& kv,
                                                   const paddle::Tensor& kvbias, const paddle::Tensor& mask, const paddle::Tensor& out,
                                                   const paddle::Tensor& lse, const paddle::Tensor& dout, int num_heads, float p,
                                                   int64_t seed) {
  Problem pr = cross_problem(q, qbias, kv, kvbias, mask, num_heads, p, seed);
  auto dq = paddle::empty(q.shape(), q.dtype(), q.place());
  auto dkv = paddle::empty(kv.shape(), kv.dtype(), kv.place());
  auto dqbias = paddle::empty(qbias.shape(), qbias.dtype(), qbias.place());
  auto dkvbias = paddle::empty(kvbias.shape(), kvbias.dtype(), kvbias.place());
  pr.q.grad = dq.data<float>();
  pr.k.grad = pr.v.grad = dkv.data<float>();
  run_backward(pr, out.data<float>(), lse.data<float>(), dout.data<float>());
  bias_grad(dq.data<float>(), pr.B * pr.Lq, q.shape()[2], dqbias.data<float>());
  bias_grad(dkv.data<float>(), pr.B * pr.Lk, kv.shape()[2], dkvbias.data<float>());
  return {dq, dqbias, dkv, dkvbias};
}

std::vector<std::vector<int64_t>> SelfShape(const std::vector<int64_t>& qkv, const std::vector<int64_t>& b,
                                            const std::vector<int64_t>& m, int num_heads) {
  return {{qkv[0], qkv[1], qkv[2] / 3}, {qkv[0], num_heads, qkv[1]}};
}
std::vector<paddle::DataType> SelfType(const paddle::DataType& qkv, const paddle::DataType& b, const paddle::DataType& m) {
  return {qkv, qkv};
}
std::vector<std::vector<int64_t>> CrossShape(const std::vector<int64_t>& q, const std::vector<int64_t>& qb,
                                             const std::vector<int64_t>& kv, const std::vector<int64_t>& kvb,
                                             const std::vector<int64_t>& m, int num_heads) {
  return {q, {q[0], num_heads, q[1]}};
}
std::vector<paddle::DataType> CrossType(const paddle::DataType& q, const paddle::DataType& qb, const paddle::DataType& kv,
                                        const paddle::DataType& kvb, const paddle::DataType& m) {
  return {q, q};
}

}  // namespace

PD_BUILD_OP(pf_self_attention)
    .Inputs({"QKV", "Bias", "Mask"})
    .Outputs({"Out", "Lse"})
    .Attrs({"num_heads: int", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(SelfAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(SelfShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SelfType));

PD_BUILD_GRAD_OP(pf_self_attention)
    .Inputs({"QKV", "Bias", "Mask", "Out", "Lse", paddle::Grad("Out")})
    .Outputs({paddle::Grad("QKV"), paddle::Grad("Bias")})
    .Attrs({"num_heads: int", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(SelfAttentionBackward));

PD_BUILD_OP(pf_cross_attention)
    .Inputs({"Q", "QBias", "KV", "KVBias", "Mask"})
    .Outputs({"Out", "Lse"})
    .Attrs({"num_heads: int", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(CrossAttentionForward))
    .SetInferShapeFn(PD_INFER_SHAPE(CrossShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(CrossType));

PD_BUILD_GRAD_OP(pf_cross_attention)
    .Inputs({"Q", "QBias", "KV", "KVBias", "Mask", "Out", "Lse", paddle::Grad("Out")})
    .Outputs({paddle::Grad("Q"), paddle::Grad("QBias"), paddle::Grad("KV"), paddle::Grad("KVBias")})
    .Attrs({"num_heads: int", "p: float", "seed: int64_t"})
    .SetKernelFn(PD_KERNEL(CrossAttentionBackward));
