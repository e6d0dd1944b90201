// One decoding step of the strictly causal linear attention on CPU, for shared queries
// and keys (BDH): o = q S, then S = U S + q^T v (U = 1 unless damped), in one pass over
// the state.
//
// The PyTorch twin (recurrent.py) reads the state with a batched matrix-vector product
// and writes it with a second pass. Here each row n of a head's [N, D] state is read and
// updated while it is in cache, and rows whose q_n is zero (inactive neurons: ReLU zeros
// stay zero under RoPE when both of a pair are) are neither read nor written. The state
// is usually larger than the caches at batch 1 (12 MiB at `small`), so the step is bound
// by memory traffic, which this halves or better.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cstdint>

// The widest vectors the running CPU has, chosen at load time: the extension cache may
// be shared by machines with different CPUs, so the build cannot assume one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BDH_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BDH_VECTOR_CLONES
#endif

namespace {

template <typename T, bool Damped>
inline void head_step(T* __restrict__ state, const T* __restrict__ q, const T* __restrict__ v,
                      T* __restrict__ out, int64_t N, int64_t D, T u) {
  for (int64_t n = 0; n < N; ++n) {
    const T qn = q[n];
    T* __restrict__ row = state + n * D;
    if (qn == T(0)) {
      // a damped state decays everywhere; an undamped one is left untouched here
      if (Damped) {
        for (int64_t d = 0; d < D; ++d) row[d] *= u;
      }
      continue;
    }
    for (int64_t d = 0; d < D; ++d) {
      out[d] += qn * row[d];  // read before write: the current token is excluded
      row[d] = (Damped ? u * row[d] : row[d]) + qn * v[d];
    }
  }
}

BDH_VECTOR_CLONES void head_step_vec(float* state, const float* q, const float* v, float* out,
                                     int64_t N, int64_t D) {
  head_step<float, false>(state, q, v, out, N, D, 1.0f);
}

BDH_VECTOR_CLONES void head_step_vec(double* state, const double* q, const double* v,
                                     double* out, int64_t N, int64_t D) {
  head_step<double, false>(state, q, v, out, N, D, 1.0);
}

BDH_VECTOR_CLONES void head_step_damped_vec(float* state, const float* q, const float* v,
                                            float* out, int64_t N, int64_t D, float u) {
  head_step<float, true>(state, q, v, out, N, D, u);
}

BDH_VECTOR_CLONES void head_step_damped_vec(double* state, const double* q, const double* v,
                                            double* out, int64_t N, int64_t D, double u) {
  head_step<double, true>(state, q, v, out, N, D, u);
}

}  // namespace

// state [B, H, N, D] (updated in place), q [B, H, N], v [B, Hv, D] with Hv 1 or H, decay
// None or [Hu] with Hu 1 or H; returns o [B, H, D]. All contiguous, float32 or float64, on
// CPU.
torch::Tensor shared_qk_step(torch::Tensor state, torch::Tensor q, torch::Tensor v,
                             c10::optional<torch::Tensor> decay) {
  TORCH_CHECK(state.dim() == 4 && q.dim() == 3 && v.dim() == 3, "shared_qk_step: shapes");
  TORCH_CHECK(state.is_contiguous() && q.is_contiguous() && v.is_contiguous(),
              "shared_qk_step: contiguous tensors");
  const int64_t B = state.size(0), H = state.size(1), N = state.size(2), D = state.size(3);
  const int64_t Hv = v.size(1);
  TORCH_CHECK(q.size(0) == B && q.size(1) == H && q.size(2) == N, "shared_qk_step: q shape");
  TORCH_CHECK(v.size(0) == B && (Hv == 1 || Hv == H) && v.size(2) == D, "shared_qk_step: v shape");
  TORCH_CHECK(q.scalar_type() == state.scalar_type() && v.scalar_type() == state.scalar_type(),
              "shared_qk_step: one dtype");
  const bool damped = decay.has_value();
  int64_t Hu = 0;
  if (damped) {
    Hu = decay->numel();
    TORCH_CHECK(decay->dim() == 1 && (Hu == 1 || Hu == H) && decay->is_contiguous() &&
                    decay->scalar_type() == state.scalar_type(),
                "shared_qk_step: decay [1 or H] of the state's dtype");
  }
  auto out = torch::zeros({B, H, D}, state.options());
  AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "shared_qk_step", [&] {
    scalar_t* S = state.data_ptr<scalar_t>();
    const scalar_t* Q = q.data_ptr<scalar_t>();
    const scalar_t* V = v.data_ptr<scalar_t>();
    scalar_t* O = out.data_ptr<scalar_t>();
    const scalar_t* U = damped ? decay->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, B * H, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        const int64_t b = bh / H, h = bh % H;
        const scalar_t* vv = V + (b * Hv + (Hv == 1 ? 0 : h)) * D;
        if (damped) {
          head_step_damped_vec(S + bh * N * D, Q + bh * N, vv, O + bh * D, N, D,
                               U[Hu == 1 ? 0 : h]);
        } else {
          head_step_vec(S + bh * N * D, Q + bh * N, vv, O + bh * D, N, D);
        }
      }
    });
  });
  return out;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("shared_qk_step", &shared_qk_step, "fused read and write of one decoding step",
        py::arg("state"), py::arg("q"), py::arg("v"), py::arg("decay") = py::none());
}
