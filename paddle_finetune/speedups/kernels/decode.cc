// One generation step of attention on the CPU (paddle custom operators, inference only), on paddle's
// cache layout ([B, H, L, head_dim], MultiHeadAttention.Cache / StaticCache):
//   pf_decode_self_attention(QKV [B, 1, 3E], Bias [3E], CacheK, CacheV, Mask) -> Out [B, 1, E], NewK, NewV
//       the new position's k and v (+ bias) appended to the cache, then attention over every position;
//   pf_decode_cross_attention(Q [B, 1, E], QBias [E], K, V, Mask)             -> Out [B, 1, E]
//       against the encoder's keys and values (the static cache).
// QKV and Q are projections without their biases. Mask as in attention.cc (additive, 4-D, each dim 1 or
// full); keys after the last one above -1e4 are skipped when the mask is per key only (right padding).
// Paddle runs ~15 ops for each of these (projections, reshapes, transposes, concat, batched GEMV, mask
// add, softmax); at a batch of 32 they are mostly per-op overhead.
#include "common.h"

namespace {

struct Decode {
  int64_t B = 0, H = 0, L = 0, dh = 0;
  float scale = 1.f;
  const float* mask = nullptr;
  int64_t mb = 0, mh = 0, mj = 0;
  std::vector<int64_t> key_len;
};

void set_mask(Decode& pr, const paddle::Tensor& mask) {
  PD_CHECK(mask.is_cpu() && mask.dtype() == paddle::DataType::FLOAT32, "the attention mask must be a float32 CPU tensor");
  auto s = mask.shape();
  PD_CHECK(s.size() == 4 && s[2] == 1, "the decoding attention mask must be 4-D [B|1, H|1, 1, L|1]");
  PD_CHECK((s[0] == 1 || s[0] == pr.B) && (s[1] == 1 || s[1] == pr.H) && (s[3] == 1 || s[3] == pr.L),
           "the decoding attention mask does not broadcast to [", pr.B, ", ", pr.H, ", 1, ", pr.L, "]");
  pr.mj = s[3] == 1 ? 0 : 1;
  pr.mh = s[1] == 1 ? 0 : s[3];
  pr.mb = s[0] == 1 ? 0 : s[1] * s[3];
  pr.mask = mask.data<float>();
  pr.key_len.assign(pr.B, pr.L);
  if (pr.mh == 0 && pr.mj == 1) {
    for (int64_t b = 0; b < pr.B; ++b) {
      int64_t last = -1;
      for (int64_t j = 0; j < pr.L; ++j)
        if (pr.mask[b * pr.mb + j] > -1e4f) last = j;
      pr.key_len[b] = last < 0 ? pr.L : last + 1;
    }
  }
}

// out[0:dh] = softmax(q . K^T * 1 + mask) . V for one (b, h); q already scaled; K, V rows of dh floats.
void attend(const Decode& pr, int64_t b, int64_t h, const float* q, const float* k, const float* v, float* out, float* s) {
  const int64_t n = pr.key_len[b];
  const float* mrow = pr.mask + b * pr.mb + h * pr.mh;
  for (int64_t j = 0; j < n; ++j) s[j] = pf::dot_of(q, k + j * pr.dh, pr.dh) + mrow[j * pr.mj];
  const float mx = pf::max_of(s, n);
  for (int64_t d = 0; d < pr.dh; ++d) out[d] = 0.f;
  if (n == 0 || mx == -std::numeric_limits<float>::infinity()) return;  // every key at -inf: zeros (paddle: NaN)
  for (int64_t j = 0; j < n; ++j) s[j] = pf::fast_exp(s[j] - mx);
  const float inv = 1.f / pf::sum_of(s, n);
  for (int64_t j = 0; j < n; ++j) {
    const float p = s[j] * inv;
    const float* vr = v + j * pr.dh;
    for (int64_t d = 0; d < pr.dh; ++d) out[d] += p * vr[d];
  }
}

void check_input(const paddle::Tensor& t, const char* name) {
  PD_CHECK(t.is_cpu() && t.dtype() == paddle::DataType::FLOAT32, name, " must be a float32 CPU tensor");
}

std::vector<paddle::Tensor> DecodeSelfAttention(const paddle::Tensor& qkv, const paddle::Tensor& bias, const paddle::Tensor& cache_k,
                                                const paddle::Tensor& cache_v, const paddle::Tensor& mask, int num_heads) {
  for (auto* t : {&qkv, &bias, &cache_k, &cache_v}) check_input(*t, "decode input");
  auto sq = qkv.shape();
  auto sc = cache_k.shape();
  PD_CHECK(sq.size() == 3 && sq[1] == 1 && sq[2] % (3 * num_heads) == 0, "qkv must be [B, 1, 3 * heads * head_dim]");
  const int64_t e = sq[2] / 3;
  Decode pr;
  pr.B = sq[0];
  pr.H = num_heads;
  pr.dh = e / num_heads;
  PD_CHECK(sc.size() == 4 && sc[0] == pr.B && sc[1] == pr.H && sc[3] == pr.dh && cache_v.shape() == sc,
           "the cache must be [B, heads, L, head_dim]");
  PD_CHECK(bias.numel() == 3 * e, "qkv bias must have ", 3 * e, " values");
  const int64_t old_len = sc[2];
  pr.L = old_len + 1;
  pr.scale = 1.f / std::sqrt(static_cast<float>(pr.dh));
  set_mask(pr, mask);
  auto out = paddle::empty({pr.B, 1, e}, qkv.dtype(), qkv.place());
  auto new_k = paddle::empty({pr.B, pr.H, pr.L, pr.dh}, qkv.dtype(), qkv.place());
  auto new_v = paddle::empty({pr.B, pr.H, pr.L, pr.dh}, qkv.dtype(), qkv.place());
  const float* x = qkv.data<float>();
  const float* bb = bias.data<float>();
  const float* ok = old_len > 0 ? cache_k.data<float>() : nullptr;
  const float* ov = old_len > 0 ? cache_v.data<float>() : nullptr;
  float* nk = new_k.data<float>();
  float* nv = new_v.data<float>();
  float* op = out.data<float>();
  const int64_t tasks = pr.B * pr.H;
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> q(pr.dh), s(pr.L);
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / pr.H, h = t % pr.H;
      const float* row = x + b * 3 * e + h * pr.dh;
      float* k = nk + t * pr.L * pr.dh;
      float* v = nv + t * pr.L * pr.dh;
      if (old_len > 0) {
        std::memcpy(k, ok + t * old_len * pr.dh, old_len * pr.dh * sizeof(float));
        std::memcpy(v, ov + t * old_len * pr.dh, old_len * pr.dh * sizeof(float));
      }
      for (int64_t d = 0; d < pr.dh; ++d) {
        q[d] = (row[d] + bb[h * pr.dh + d]) * pr.scale;
        k[old_len * pr.dh + d] = row[e + d] + bb[e + h * pr.dh + d];
        v[old_len * pr.dh + d] = row[2 * e + d] + bb[2 * e + h * pr.dh + d];
      }
      attend(pr, b, h, q.data(), k, v, op + b * e + h * pr.dh, s.data());
    }
  }
  return {out, new_k, new_v};
}

std::vector<paddle::Tensor> DecodeCrossAttention(const paddle::Tensor& q_in, const paddle::Tensor& qbias, const paddle::Tensor& key,
                                                 const paddle::Tensor& value, const paddle::Tensor& mask, int num_heads) {
  for (auto* t : {&q_in, &qbias, &key, &value}) check_input(*t, "decode input");
  auto sq = q_in.shape();
  auto sk = key.shape();
  PD_CHECK(sq.size() == 3 && sq[1] == 1 && sq[2] % num_heads == 0, "q must be [B, 1, heads * head_dim]");
  const int64_t e = sq[2];
  Decode pr;
  pr.B = sq[0];
  pr.H = num_heads;
  pr.dh = e / num_heads;
  PD_CHECK(sk.size() == 4 && sk[0] == pr.B && sk[1] == pr.H && sk[3] == pr.dh && value.shape() == sk,
           "keys and values must be [B, heads, L, head_dim]");
  PD_CHECK(qbias.numel() == e, "q bias must have ", e, " values");
  pr.L = sk[2];
  pr.scale = 1.f / std::sqrt(static_cast<float>(pr.dh));
  set_mask(pr, mask);
  auto out = paddle::empty({pr.B, 1, e}, q_in.dtype(), q_in.place());
  const float* x = q_in.data<float>();
  const float* bb = qbias.data<float>();
  const float* kp = key.data<float>();
  const float* vp = value.data<float>();
  float* op = out.data<float>();
  const int64_t tasks = pr.B * pr.H;
#pragma omp parallel num_threads(pf::threads())
  {
    std::vector<float> q(pr.dh), s(std::max<int64_t>(pr.L, 1));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tasks; ++t) {
      const int64_t b = t / pr.H, h = t % pr.H;
      for (int64_t d = 0; d < pr.dh; ++d) q[d] = (x[b * e + h * pr.dh + d] + bb[h * pr.dh + d]) * pr.scale;
      attend(pr, b, h, q.data(), kp + t * pr.L * pr.dh, vp + t * pr.L * pr.dh, op + b * e + h * pr.dh, s.data());
    }
  }
  return {out};
}

std::vector<std::vector<int64_t>> SelfShape(const std::vector<int64_t>& qkv, const std::vector<int64_t>& b,
                                            const std::vector<int64_t>& k, const std::vector<int64_t>& v,
                                            const std::vector<int64_t>& m, int num_heads) {
  std::vector<int64_t> cache = {k[0], k[1], k[2] + 1, k[3]};
  return {{qkv[0], 1, qkv[2] / 3}, cache, cache};
}
std::vector<paddle::DataType> SelfType(const paddle::DataType& qkv, const paddle::DataType& b, const paddle::DataType& k,
                                       const paddle::DataType& v, const paddle::DataType& m) {
  return {qkv, qkv, qkv};
}
std::vector<std::vector<int64_t>> CrossShape(const std::vector<int64_t>& q, const std::vector<int64_t>& b,
                                             const std::vector<int64_t>& k, const std::vector<int64_t>& v,
                                             const std::vector<int64_t>& m, int num_heads) {
  return {q};
}
std::vector<paddle::DataType> CrossType(const paddle::DataType& q, const paddle::DataType& b, const paddle::DataType& k,
                                        const paddle::DataType& v, const paddle::DataType& m) {
  return {q};
}

}  // namespace

PD_BUILD_OP(pf_decode_self_attention)
    .Inputs({"QKV", "Bias", "CacheK", "CacheV", "Mask"})
    .Outputs({"Out", "NewK", "NewV"})
    .Attrs({"num_heads: int"})
    .SetKernelFn(PD_KERNEL(DecodeSelfAttention))
    .SetInferShapeFn(PD_INFER_SHAPE(SelfShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(SelfType));

PD_BUILD_OP(pf_decode_cross_attention)
    .Inputs({"Q", "QBias", "K", "V", "Mask"})
    .Outputs({"Out"})
    .Attrs({"num_heads: int"})
    .SetKernelFn(PD_KERNEL(DecodeCrossAttention))
    .SetInferShapeFn(PD_INFER_SHAPE(CrossShape))
    .SetInferDtypeFn(PD_INFER_DTYPE(CrossType));
