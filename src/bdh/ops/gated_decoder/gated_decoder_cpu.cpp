// The decoder product of one decoding step on CPU, reading only the rows it needs:
// out[h, b, :] = sum_n x[h, b, n] * y[h, b, n] * decoder[h, n, :].
//
// The twin (naive.py) is a batched matrix-vector product over the whole [N, D] matrix of
// every head. Here a row n of the decoder is read only when some sequence of the batch
// has x * y != 0 there (both neurons active: about a quarter of the rows of an untrained
// `small`, fewer once trained), so at batch 1 most of the matrix is never read; the step
// is bound by memory traffic (benchmarks/decode_bandwidth.py), and this cuts it.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cstdint>

// Vector width chosen at load time: the extension cache may be shared by machines with
// different CPUs (as in recurrent_cpu.cpp).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BDH_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BDH_VECTOR_CLONES
#endif

namespace {

template <typename T>
inline void head_rows(const T* __restrict__ x, const T* __restrict__ y, const T* __restrict__ dec,
                      T* __restrict__ out, int64_t B, int64_t N, int64_t D) {
  // x, y: [B, N] of this head; dec: [N, D]; out: [B, D], zeroed
  for (int64_t n = 0; n < N; ++n) {
    const T* __restrict__ row = dec + n * D;
    for (int64_t b = 0; b < B; ++b) {
      const T c = x[b * N + n] * y[b * N + n];
      if (c == T(0)) continue;  // the row is read only for the sequences that use it
      T* __restrict__ o = out + b * D;
      for (int64_t d = 0; d < D; ++d) o[d] += c * row[d];
    }
  }
}

BDH_VECTOR_CLONES void head_rows_vec(const float* x, const float* y, const float* dec, float* out,
                                     int64_t B, int64_t N, int64_t D) {
  head_rows<float>(x, y, dec, out, B, N, D);
}

BDH_VECTOR_CLONES void head_rows_vec(const double* x, const double* y, const double* dec,
                                     double* out, int64_t B, int64_t N, int64_t D) {
  head_rows<double>(x, y, dec, out, B, N, D);
}

}  // namespace

// x, y [H, B, N], decoder [H, N, D]: contiguous, one dtype (float32 or float64), on CPU;
// returns [H, B, D].
torch::Tensor gated_decoder(torch::Tensor x, torch::Tensor y, torch::Tensor decoder) {
  TORCH_CHECK(x.dim() == 3 && y.dim() == 3 && decoder.dim() == 3, "gated_decoder: shapes");
  TORCH_CHECK(x.is_contiguous() && y.is_contiguous() && decoder.is_contiguous(),
              "gated_decoder: contiguous tensors");
  const int64_t H = x.size(0), B = x.size(1), N = x.size(2), D = decoder.size(2);
  TORCH_CHECK(y.sizes() == x.sizes() && decoder.size(0) == H && decoder.size(1) == N,
              "gated_decoder: x, y [H, B, N] and decoder [H, N, D]");
  TORCH_CHECK(y.scalar_type() == x.scalar_type() && decoder.scalar_type() == x.scalar_type(),
              "gated_decoder: one dtype");
  auto out = torch::zeros({H, B, D}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gated_decoder", [&] {
    const scalar_t* X = x.data_ptr<scalar_t>();
    const scalar_t* Y = y.data_ptr<scalar_t>();
    const scalar_t* W = decoder.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    at::parallel_for(0, H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t h = begin; h < end; ++h) {
        head_rows_vec(X + h * B * N, Y + h * B * N, W + h * N * D, O + h * B * D, B, N, D);
      }
    });
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("gated_decoder", &gated_decoder, "decoder product over the rows with x * y != 0");
}
