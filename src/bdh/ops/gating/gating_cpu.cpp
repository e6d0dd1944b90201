// BDH's gate, y = relu(y_pre), xy = x * y, out = dropout(xy), in one pass forward and one
// backward, with the numbers torch's separate ops give (each op rounds to the tensor's type).
//
// Torch makes five passes forward (relu, mul, the mask's div_, mul, and the copy that
// lays out the decoder's input) and five backward (dropout's mul, two muls, relu's
// threshold_backward, and the copy back). Here `out` is written straight in the decoder's
// layout [B, T, H, N], and dropout's noise, mask / (1 - p), is mask * scale with scale the
// value torch's div_ gives 1 (the mask holds 0 or 1).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BDH_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#else
#define BDH_VECTOR_CLONES
#endif

// Values are loaded to float, and rounded to the storage type after each op, as torch's
// ops round. bf16 is handled as its bits, uint16_t (round to nearest even, as
// c10::BFloat16 does), which the compiler vectorizes; a conversion through c10::BFloat16
// or c10::Half it does not (fp16 is left to the torch twin).
inline float load(float v) { return v; }
inline float load(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

template <typename T>
inline T store(float f);
template <>
inline float store<float>(float f) {
  return f;
}
template <>
inline uint16_t store<uint16_t>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>(f != f ? 0x7fc0u : rounded);  // a select, not a branch
}

template <typename T>
inline float rounded(float f) {
  return load(store<T>(f));
}

template <typename T>
BDH_VECTOR_CLONES void forward_row(const T* __restrict__ x, const T* __restrict__ y_pre,
                                   const T* __restrict__ mask, float scale, T* __restrict__ y,
                                   T* __restrict__ xy, T* __restrict__ out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = load(y_pre[i]);
    const float yi = v <= 0.0f ? 0.0f : v;  // clamp_min's: NaN stays NaN
    const float p = rounded<T>(load(x[i]) * yi);
    y[i] = store<T>(yi);
    xy[i] = store<T>(p);
    out[i] = store<T>(p * (load(mask[i]) * scale));  // mask * scale: 0 or scale, exact
  }
}

template <typename T>
BDH_VECTOR_CLONES void backward_row(const T* __restrict__ grad, const T* __restrict__ x,
                                    const T* __restrict__ y, const T* __restrict__ mask, float scale,
                                    T* __restrict__ grad_x, T* __restrict__ grad_y_pre, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = rounded<T>(load(grad[i]) * (load(mask[i]) * scale));
    const float yi = load(y[i]);
    grad_x[i] = store<T>(g * yi);
    grad_y_pre[i] = yi <= 0.0f ? store<T>(0.0f) : store<T>(g * load(x[i]));
  }
}

void check(const torch::Tensor& t, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == like.scalar_type() && t.sizes() == like.sizes(),
              "gate: ", name, " must be a CPU tensor of x's shape and type");
}

template <typename T>
T* data(const torch::Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

template <typename F>
void dispatch(at::ScalarType type, F&& body) {
  switch (type) {
    case at::kFloat: body(float{}); break;
    case at::kBFloat16: body(uint16_t{}); break;
    default: TORCH_CHECK(false, "gate: fp32 or bf16 only");
  }
}

}  // namespace

// x, y_pre, mask: contiguous [B, H, T, N]; scale: torch's mask.div_(1 - p) of a 1, in x's type.
// Returns y, xy ([B, H, T, N]) and out as a [B, H, T, N] view of a [B, T, H, N] tensor.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& y_pre,
                                                                const torch::Tensor& mask, double scale) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && y_pre.is_contiguous() && mask.is_contiguous(),
              "gate: contiguous [B, H, T, N] tensors");
  check(y_pre, x, "y_pre");
  check(mask, x, "mask");
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), N = x.size(3);
  auto y = torch::empty_like(x), xy = torch::empty_like(x);
  auto out = torch::empty({B, T, H, N}, x.options());
  dispatch(x.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    const float s = static_cast<float>(scale);
    const auto *xp = data<scalar_t>(x), *yp = data<scalar_t>(y_pre), *mp = data<scalar_t>(mask);
    auto *yo = data<scalar_t>(y), *xyo = data<scalar_t>(xy), *oo = data<scalar_t>(out);
    at::parallel_for(0, B * H * T, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (H * T), h = (r / T) % H, t = r % T;
        const int64_t row = r * N;
        forward_row(xp + row, yp + row, mp + row, s, yo + row, xyo + row, oo + ((b * T + t) * H + h) * N, N);
      }
    });
  });
  return {y, xy, out.transpose(1, 2)};
}

// grad: [B, H, T, N] with any strides but a contiguous last dimension; x, y, mask as saved.
std::tuple<torch::Tensor, torch::Tensor> backward(const torch::Tensor& grad, const torch::Tensor& x,
                                                  const torch::Tensor& y, const torch::Tensor& mask, double scale) {
  TORCH_CHECK(grad.dim() == 4 && grad.stride(3) == 1, "gate: grad's last dimension must be contiguous");
  check(grad, x, "grad");
  check(y, x, "y");
  check(mask, x, "mask");
  const int64_t B = x.size(0), H = x.size(1), T = x.size(2), N = x.size(3);
  const int64_t sb = grad.stride(0), sh = grad.stride(1), st = grad.stride(2);
  auto grad_x = torch::empty_like(x), grad_y_pre = torch::empty_like(x);
  dispatch(x.scalar_type(), [&](auto zero) {
    using scalar_t = decltype(zero);
    const float s = static_cast<float>(scale);
    const auto *gp = data<scalar_t>(grad), *xp = data<scalar_t>(x), *yp = data<scalar_t>(y);
    const auto* mp = data<scalar_t>(mask);
    auto *gxo = data<scalar_t>(grad_x), *gyo = data<scalar_t>(grad_y_pre);
    at::parallel_for(0, B * H * T, 8, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (H * T), h = (r / T) % H, t = r % T;
        const int64_t row = r * N;
        backward_row(gp + b * sb + h * sh + t * st, xp + row, yp + row, mp + row, s, gxo + row, gyo + row, N);
      }
    });
  });
  return {grad_x, grad_y_pre};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "y = relu(y_pre), xy = x * y, out = xy * mask * scale");
  m.def("backward", &backward, "gradients of out with respect to x and y_pre");
}
