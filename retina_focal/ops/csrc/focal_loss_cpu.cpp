// Fused sigmoid focal loss from integer anchor labels, CPU (retina_focal.ops).
//
// Plain C ABI, no PyTorch headers: the library builds with one g++ call in about a second and
// is loaded with ctypes (see retina_focal/ops/_cpu_kernel.py). Forward and backward are each
// one pass over the (R, K) logits: no one-hot target, no copy of the valid rows, no saved
// intermediate. Rows are split over `num_threads` std::threads; the inner loop over the K
// classes is written so that the compiler vectorises it (own exp / log1p, no libm calls).
//
// Per element, with target t = (label == k) and z = t ? -x : x, the loss is
//     a * sigmoid(z)^gamma * softplus(z),      a = alpha_pos[k] if t else alpha_neg[k]
// (sigmoid(z) = 1 - p_t and softplus(z) = -log(p_t)), and its derivative is
//     dL/dx = s * a * u^gamma * (gamma * (1 - u) * softplus(z) + u),   u = sigmoid(z),
// with s = -1 if t else +1. Every term is >= 0, so nothing cancels.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace {

enum DType { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };
enum Gamma { G_ZERO = 0, G_ONE = 1, G_TWO = 2, G_ANY = 3 };

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even; NaN stays NaN
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// exp(y) for y <= 0 in float: 2^n * P(r), y = n ln2 + r, |r| <= ln2 / 2, P the degree-7
// Taylor polynomial (truncation error < 6e-9 relative). Results below FLT_MIN flush to 0.
inline float exp_neg(float y) {
  const float kLog2e = 1.44269504088896341f;
  const float kLn2Hi = 0.693145751953125f;
  const float kLn2Lo = 1.42860682030941723212e-6f;
  bool tiny = y < -87.0f;
  y = tiny ? -87.0f : y;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: (v + kRound) - kRound rounds v to an integer
  float n = (y * kLog2e + kRound) - kRound;
  float r = (y - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, 4);
  return tiny ? 0.0f : p * scale;
}

// log(1 + e) for e in [0, 1] in float: 2 atanh(s), s = e / (2 + e) in [0, 1/3], series to
// s^15 (truncation error < 2e-9 relative); exact for small e, unlike log(1 + e).
inline float log1p_unit(float e) {
  float s = e / (2.0f + e);
  float s2 = s * s;
  float q = 1.0f / 15.0f;
  q = q * s2 + 1.0f / 13.0f;
  q = q * s2 + 1.0f / 11.0f;
  q = q * s2 + 1.0f / 9.0f;
  q = q * s2 + 1.0f / 7.0f;
  q = q * s2 + 1.0f / 5.0f;
  q = q * s2 + 1.0f / 3.0f;
  q = q * s2 + 1.0f;
  return 2.0f * s * q;
}

// exp(-gamma * (m + l)) with m >= 0 exact (|logit| or 0) and l in [0, log 2]. gamma * m is
// split into its rounded value and the rounding error (one fma), so the result keeps float
// precision even where gamma * m is large (a rounded product would lose up to ~4e-6 relative).
inline float pow_sigmoid(float m, float l, float gamma) {
  float hi = gamma * m;
  float lo = std::fma(gamma, m, -hi);
  return exp_neg(-hi) * exp_neg(-(gamma * l + lo));
}

inline double exp_neg(double y) { return std::exp(y); }
inline double pow_sigmoid(double m, double l, double gamma) { return std::exp(-gamma * (m + l)); }
inline double log1p_unit(double e) { return std::log1p(e); }

// Storage type of each dtype code; 16-bit floats are converted to float on load.
template <int DT> struct Storage { using type = uint16_t; };  // BF16
template <> struct Storage<F32> { using type = float; };
template <> struct Storage<F64> { using type = double; };
#ifndef RF_NO_FLOAT16
template <> struct Storage<F16> { using type = _Float16; };
#endif

// IEEE half -> float with integer ops and one multiply (vectorises, unlike a _Float16 cast
// without AVX512-FP16): the 15 magnitude bits shifted into a float's place and rescaled by
// 2^112 give normals and subnormals exactly; infinities and NaNs get the exponent set.
inline float half_bits_to_float(uint16_t h) {
  uint32_t mag = static_cast<uint32_t>(h & 0x7fffu) << 13;
  float f;
  std::memcpy(&f, &mag, 4);
  f *= 5.192296858534828e+33f;  // 2^112
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits |= (h & 0x7c00u) == 0x7c00u ? 0x7f800000u : 0u;
  bits |= static_cast<uint32_t>(h & 0x8000u) << 16;
  std::memcpy(&f, &bits, 4);
  return f;
}

template <typename A, int DT>
inline A to_acc(typename Storage<DT>::type v) {
  if constexpr (DT == BF16) {
    return static_cast<A>(bf16_to_float(v));
#ifndef RF_NO_FLOAT16
  } else if constexpr (DT == F16) {
    uint16_t h;
    std::memcpy(&h, &v, 2);
    return static_cast<A>(half_bits_to_float(h));
#endif
  } else {
    return static_cast<A>(v);
  }
}

// Loss (want_grad = false) or d loss / dx (want_grad = true) of one element.
template <typename A, int G, bool want_grad>
inline A element(A x, bool t, A a, A gamma) {
  A z = t ? -x : x;
  A e = exp_neg(-std::fabs(z));
  A l1p = log1p_unit(e);
  A softplus = (z > A(0) ? z : A(0)) + l1p;  // -log(p_t)
  A inv = A(1) / (A(1) + e);
  A u = z >= A(0) ? inv : e * inv;  // sigmoid(z) = 1 - p_t
  A v = z >= A(0) ? e * inv : inv;  // 1 - u
  A mod;                            // u ** gamma
  if (G == G_ZERO) {
    mod = A(1);
  } else if (G == G_ONE) {
    mod = u;
  } else if (G == G_TWO) {
    mod = u * u;
  } else {  // u^gamma = exp(-gamma * softplus(-z)), softplus(-z) = max(-z, 0) + l1p
    mod = pow_sigmoid(z < A(0) ? -z : A(0), l1p, gamma);
  }
  if (!want_grad) return a * mod * softplus;
  A d = a * mod * (gamma * v * softplus + u);
  return t ? -d : d;
}

struct Args {
  const void* logits;
  int dtype;
  const int64_t* labels;
  int64_t R, K;
  const void* alpha_pos;  // (K,) of A
  const void* alpha_neg;  // (K,) of A
  double gamma;
  const void* weights;  // (R,) of A or null
  // forward
  void* out;  // (R, K) of A ("none") or null
  // backward
  const void* grad_out;  // (R, K) of A ("none") or null: then grad_scale
  double grad_scale;
  void* grad_in;  // (R, K) in the logits' dtype
};

template <typename A>
inline A row_weight(const Args& a, int64_t r) {
  if (a.labels[r] < 0) return A(0);
  return a.weights ? static_cast<const A*>(a.weights)[r] : A(1);
}

template <typename A, int G, int DT, bool STORE>
void forward_rows_impl(const Args& a, int64_t r0, int64_t r1, double* total, int64_t* valid) {
  const int64_t K = a.K;
  const A* ap = static_cast<const A*>(a.alpha_pos);
  const A* an = static_cast<const A*>(a.alpha_neg);
  const A gamma = static_cast<A>(a.gamma);
  A* out = static_cast<A*>(a.out);
  const auto* logits = static_cast<const typename Storage<DT>::type*>(a.logits);
  double sum = 0;
  int64_t count = 0;
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t label = a.labels[r];
    count += label >= 0;
    const A w = row_weight<A>(a, r);
    if (w == A(0)) {
      if (STORE) std::memset(out + r * K, 0, sizeof(A) * K);
      continue;
    }
    const auto* xr = logits + r * K;
    A acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t k = 0; k < K; ++k) {
      const bool t = k == label;
      const A x = to_acc<A, DT>(xr[k]);
      const A apk = ap[k], ank = an[k];
      const A l = element<A, G, false>(x, t, t ? apk : ank, gamma) * w;
      if (STORE) out[r * K + k] = l;
      acc += l;
    }
    sum += acc;
  }
  *total = sum;
  *valid = count;
}

template <typename A, int G, int DT>
void forward_rows(const Args& a, int64_t r0, int64_t r1, double* total, int64_t* valid) {
  if (a.out)
    forward_rows_impl<A, G, DT, true>(a, r0, r1, total, valid);
  else
    forward_rows_impl<A, G, DT, false>(a, r0, r1, total, valid);
}

template <typename A>
inline void store(void* p, int64_t i, A v, int dtype) {
  switch (dtype) {
    case F32: static_cast<float*>(p)[i] = static_cast<float>(v); break;
    case F64: static_cast<double*>(p)[i] = static_cast<double>(v); break;
#ifndef RF_NO_FLOAT16
    case F16: static_cast<_Float16*>(p)[i] = static_cast<_Float16>(static_cast<float>(v)); break;
#endif
    default: static_cast<uint16_t*>(p)[i] = float_to_bf16(static_cast<float>(v));
  }
}

template <typename A, int G, int DT, bool GO>
void backward_rows_impl(const Args& a, int64_t r0, int64_t r1) {
  const int64_t K = a.K;
  const A* ap = static_cast<const A*>(a.alpha_pos);
  const A* an = static_cast<const A*>(a.alpha_neg);
  const A gamma = static_cast<A>(a.gamma);
  const A* go = static_cast<const A*>(a.grad_out);
  const A scale = static_cast<A>(a.grad_scale);
  const auto* logits = static_cast<const typename Storage<DT>::type*>(a.logits);
  // float16 / bfloat16 gradients: computed into a float row, then rounded.
  constexpr bool direct = DT == F32 || DT == F64;
  std::vector<A> row(direct ? 0 : K);
  for (int64_t r = r0; r < r1; ++r) {
    const int64_t label = a.labels[r];
    const A w = row_weight<A>(a, r) * scale;
    A* dst = direct ? static_cast<A*>(a.grad_in) + r * K : row.data();
    if (w == A(0)) {
      for (int64_t k = 0; k < K; ++k) dst[k] = A(0);
    } else {
      const auto* xr = logits + r * K;
#pragma omp simd
      for (int64_t k = 0; k < K; ++k) {
        const bool t = k == label;
        const A x = to_acc<A, DT>(xr[k]);
        const A apk = ap[k], ank = an[k];
        A g = element<A, G, true>(x, t, t ? apk : ank, gamma) * w;
        if (GO) g *= go[r * K + k];
        dst[k] = g;
      }
    }
    if (!direct)
      for (int64_t k = 0; k < K; ++k) store<A>(a.grad_in, r * K + k, row[k], DT);
  }
}

template <typename A, int G, int DT>
void backward_rows(const Args& a, int64_t r0, int64_t r1) {
  if (a.grad_out)
    backward_rows_impl<A, G, DT, true>(a, r0, r1);
  else
    backward_rows_impl<A, G, DT, false>(a, r0, r1);
}

template <typename Fn>
void parallel_rows(int64_t R, int64_t K, int num_threads, Fn fn) {
  int64_t chunks = num_threads < 1 ? 1 : num_threads;
  const int64_t min_rows = (1 << 15) / (K > 0 ? K : 1) + 1;  // ~32k elements per thread
  if (R / min_rows < chunks) chunks = R / min_rows > 1 ? R / min_rows : 1;
  std::vector<std::thread> pool;
  const int64_t step = (R + chunks - 1) / chunks;
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t r0 = c * step, r1 = r0 + step < R ? r0 + step : R;
    if (r0 >= r1) continue;
    try {
      pool.emplace_back(fn, c, r0, r1);
    } catch (...) {  // no thread available: do this chunk here
      fn(c, r0, r1);
    }
  }
  fn(0, 0, step < R ? step : R);
  for (auto& th : pool) th.join();
}

using FwdFn = void (*)(const Args&, int64_t, int64_t, double*, int64_t*);
using BwdFn = void (*)(const Args&, int64_t, int64_t);

template <typename A, int DT>
void pick(int gmode, FwdFn* f, BwdFn* b) {
  switch (gmode) {
    case G_ZERO: *f = forward_rows<A, G_ZERO, DT>; *b = backward_rows<A, G_ZERO, DT>; break;
    case G_ONE: *f = forward_rows<A, G_ONE, DT>; *b = backward_rows<A, G_ONE, DT>; break;
    case G_TWO: *f = forward_rows<A, G_TWO, DT>; *b = backward_rows<A, G_TWO, DT>; break;
    default: *f = forward_rows<A, G_ANY, DT>; *b = backward_rows<A, G_ANY, DT>;
  }
}

// Accumulation type: double for float64 logits, float otherwise.
bool kernels(int dtype, double gamma, FwdFn* f, BwdFn* b) {
  const int gmode = gamma == 0 ? G_ZERO : gamma == 1 ? G_ONE : gamma == 2 ? G_TWO : G_ANY;
  switch (dtype) {
    case F32: pick<float, F32>(gmode, f, b); return true;
    case F64: pick<double, F64>(gmode, f, b); return true;
#ifndef RF_NO_FLOAT16
    case F16: pick<float, F16>(gmode, f, b); return true;
#endif
    case BF16: pick<float, BF16>(gmode, f, b); return true;
    default: return false;
  }
}

}  // namespace

extern "C" {

int rf_focal_abi_version() { return 1; }

int rf_focal_has_float16() {
#ifdef RF_NO_FLOAT16
  return 0;
#else
  return 1;
#endif
}

// Returns 0 on success; writes the weighted loss sum to *total and the number of
// non-ignored rows to *valid; fills `out` (R, K) when it is not null.
int rf_focal_forward(const void* logits, int dtype, const int64_t* labels, int64_t R,
                     int64_t K, const void* alpha_pos, const void* alpha_neg, double gamma,
                     const void* weights, void* out, double* total, int64_t* valid,
                     int num_threads) {
  FwdFn f;
  BwdFn b;
  if (!kernels(dtype, gamma, &f, &b)) return 1;
  Args a{logits, dtype, labels, R, K, alpha_pos, alpha_neg, gamma, weights,
         out, nullptr, 0.0, nullptr};
  std::vector<double> sums(num_threads > 0 ? num_threads : 1, 0.0);
  std::vector<int64_t> counts(sums.size(), 0);
  parallel_rows(R, K, num_threads, [&](int64_t c, int64_t r0, int64_t r1) {
    f(a, r0, r1, &sums[c], &counts[c]);
  });
  *total = 0;
  *valid = 0;
  for (size_t c = 0; c < sums.size(); ++c) {
    *total += sums[c];
    *valid += counts[c];
  }
  return 0;
}

// grad_in (R, K, logits' dtype) = grad_scale * [grad_out] * d loss / d logits.
int rf_focal_backward(const void* logits, int dtype, const int64_t* labels, int64_t R,
                      int64_t K, const void* alpha_pos, const void* alpha_neg, double gamma,
                      const void* weights, const void* grad_out, double grad_scale,
                      void* grad_in, int num_threads) {
  FwdFn f;
  BwdFn b;
  if (!kernels(dtype, gamma, &f, &b)) return 1;
  Args a{logits, dtype, labels, R, K, alpha_pos, alpha_neg, gamma, weights,
         nullptr, grad_out, grad_scale, grad_in};
  parallel_rows(R, K, num_threads, [&](int64_t, int64_t r0, int64_t r1) { b(a, r0, r1); });
  return 0;
}

}  // extern "C"
