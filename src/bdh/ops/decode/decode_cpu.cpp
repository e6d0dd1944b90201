// One decoding step of BDH on CPU, one token per sequence, from the token to its logits:
// what `decode_token_torch` (naive.py) computes, in one call and one pass over each head.
//
// x = LN(embed[token]); then per layer, sequence b and head h (one task each, in parallel):
//   x_sparse = relu(x E_h)                         E_h = encoder[h]     [D, N]
//   q        = rope(x_sparse)                       pairs (2i, 2i+1) rotated by the phasor i
//   a        = q S,  then S = U S + q^T x           the state's rows of zero q_n untouched
//   y_n      = relu(LN(a) . Ev_h[:, n])             only where x_sparse_n > 0
//   part     = sum_n x_sparse_n y_n Dec_{hN+n}      only where x_sparse_n y_n > 0
// then x = LN(x + LN(sum_h part)) per sequence; finally logits = x lm_head.
//
// At batch 1 the PyTorch twin runs about 30 small ops per layer, whose dispatch costs more
// than their arithmetic, and reads all of encoder_v and decoder. Here y is computed only
// for the active neurons (a quarter or less): `encoder_v_t` is encoder_v transposed
// [H, N, D], so each active column is one contiguous row, and only the decoder rows of
// neurons with x y > 0 are read. The state's rows of inactive neurons (q_n = 0: a ReLU
// zero stays zero under RoPE when both of its pair are) are neither read nor written.
// One OpenMP team runs the whole step: each thread takes a range of heads and the threads
// meet once per layer at a spinning barrier (a parallel region per layer costs about as
// much as a `small` layer's work when idle threads sleep).
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <omp.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>


// The widest vectors the running CPU has, chosen at load time: the extension cache may
// be shared by machines with different CPUs, so the build cannot assume one.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BDH_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BDH_VECTOR_CLONES
#endif

namespace {

constexpr double kLayerNormEps = 1e-5;  // F.layer_norm's default
// Below this state size per layer the layer is done in one thread: waking the others
// costs more than they save (a `tiny` layer's state is 256 KiB, a `small` one's 2 MiB).
constexpr int64_t kParallelMinStateBytes = 1 << 20;

// The threads of one step meet after every layer. OpenMP's own barrier, and a parallel
// region per layer, sleep in the kernel under OMP_WAIT_POLICY=PASSIVE (the CLI's default)
// and wake in about 0.1 ms each, as long as a `small` layer's work: here the threads spin
// briefly (their waits are the imbalance of one layer), then yield.
class SpinBarrier {
 public:
  explicit SpinBarrier(int count) : count_(count) {}

  void wait() {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == count_ - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins) {
      if (spins < kSpins) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        std::this_thread::yield();  // the other thread is late (descheduled): give way
      }
    }
  }

 private:
  static constexpr int kSpins = 4000;
  const int count_;
  std::atomic<int> arrived_{0};
  std::atomic<int> generation_{0};
};

template <typename T>
struct Weights {
  const T* encoder;      // [H, D, N]
  const T* encoder_v_t;  // [H, N, D]
  const T* decoder;      // [H * N, D]
  const T* rope;         // [N / 2, 2]: cos, sin of the phase of each pair
  int64_t H, N, D;
};

// Rows ahead to prefetch: the active rows are scattered, so the hardware prefetcher,
// which follows sequential streams, does not fetch them in time.
constexpr int64_t kAhead = 8;

template <typename T>
inline void prefetch_row(const T* row, int64_t D, bool write) {
  const char* p = reinterpret_cast<const char*>(row);
  const int64_t bytes = D * static_cast<int64_t>(sizeof(T));
  for (int64_t offset = 0; offset < bytes; offset += 64) {
    if (write) {
      __builtin_prefetch(p + offset, 1);
    } else {
      __builtin_prefetch(p + offset, 0);
    }
  }
}

template <typename T>
struct Workspace {
  T* scratch;      // 2 N + 2 D elements
  int64_t* active; // N indices
};

// Parameter-free LayerNorm of x [D] into out [D] (biased variance, as F.layer_norm).
template <typename T>
inline void layer_norm(const T* __restrict__ x, T* __restrict__ out, int64_t D) {
  T mean = 0;
#pragma omp simd reduction(+ : mean)
  for (int64_t d = 0; d < D; ++d) mean += x[d];
  mean /= T(D);
  T var = 0;
#pragma omp simd reduction(+ : var)
  for (int64_t d = 0; d < D; ++d) var += (x[d] - mean) * (x[d] - mean);
  var /= T(D);
  const T inv = T(1) / std::sqrt(var + T(kLayerNormEps));
  for (int64_t d = 0; d < D; ++d) out[d] = (x[d] - mean) * inv;
}

// One (sequence, head) of one layer: updates the head's state [N, D] in place and writes
// the head's share of the decoder output into part [D].
template <typename T, bool Damped>
__attribute__((always_inline)) inline void head_layer(const Weights<T>& w, int64_t h, const T* __restrict__ x,
                       T* __restrict__ state, T* __restrict__ part, Workspace<T>& ws, T u) {
  const int64_t N = w.N, D = w.D;
  T* __restrict__ xs = ws.scratch;      // x_sparse [N]
  T* __restrict__ q = xs + N;        // rope(x_sparse) [N]
  T* __restrict__ a = q + N;         // attention output [D]
  T* __restrict__ a_ln = a + D;      // LN(a) [D]
  int64_t* __restrict__ active = ws.active;  // indices of active neurons [N]

  for (int64_t n = 0; n < N; ++n) xs[n] = 0;
  const T* enc = w.encoder + h * D * N;
  int64_t d = 0;
  for (; d + 4 <= D; d += 4) {  // four rows per pass over xs: a quarter of its loads and stores
    const T x0 = x[d], x1 = x[d + 1], x2 = x[d + 2], x3 = x[d + 3];
    const T* __restrict__ r0 = enc + d * N;
    const T* __restrict__ r1 = r0 + N;
    const T* __restrict__ r2 = r1 + N;
    const T* __restrict__ r3 = r2 + N;
    for (int64_t n = 0; n < N; ++n) xs[n] += x0 * r0[n] + x1 * r1[n] + x2 * r2[n] + x3 * r3[n];
  }
  for (; d < D; ++d) {
    const T xd = x[d];
    const T* __restrict__ row = enc + d * N;
    for (int64_t n = 0; n < N; ++n) xs[n] += xd * row[n];
  }
  for (int64_t n = 0; n < N; ++n) xs[n] = xs[n] > T(0) ? xs[n] : T(0);

  for (int64_t i = 0; i < N / 2; ++i) {
    const T re = xs[2 * i], im = xs[2 * i + 1], c = w.rope[2 * i], s = w.rope[2 * i + 1];
    q[2 * i] = re * c - im * s;
    q[2 * i + 1] = im * c + re * s;
  }

  for (int64_t d = 0; d < D; ++d) a[d] = 0;
  if (Damped) {
    for (int64_t n = 0; n < N; ++n) {
      const T qn = q[n];
      T* __restrict__ row = state + n * D;
      for (int64_t d = 0; d < D; ++d) {
        a[d] += qn * row[d];  // read before write: the current token is excluded
        row[d] = u * row[d] + qn * x[d];
      }
    }
  } else {
    int64_t count = 0;
    for (int64_t n = 0; n < N; ++n) {
      if (q[n] != T(0)) active[count++] = n;
    }
    for (int64_t i = 0; i < count; ++i) {
      if (i + kAhead < count) prefetch_row(state + active[i + kAhead] * D, D, true);
      const T qn = q[active[i]];
      T* __restrict__ row = state + active[i] * D;
      for (int64_t d = 0; d < D; ++d) {
        a[d] += qn * row[d];  // read before write: the current token is excluded
        row[d] += qn * x[d];
      }
    }
  }
  layer_norm(a, a_ln, D);

  for (int64_t d = 0; d < D; ++d) part[d] = 0;
  const T* env = w.encoder_v_t + h * N * D;
  const T* dec = w.decoder + h * N * D;
  int64_t count = 0;
  for (int64_t n = 0; n < N; ++n) {
    if (xs[n] > T(0)) active[count++] = n;
  }
  int64_t firing = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (i + kAhead < count) prefetch_row(env + active[i + kAhead] * D, D, false);
    const int64_t n = active[i];
    const T* __restrict__ column = env + n * D;
    T y = 0;
#pragma omp simd reduction(+ : y)
    for (int64_t d = 0; d < D; ++d) y += a_ln[d] * column[d];
    if (y > T(0)) {
      xs[firing] = xs[n] * y;  // xs[n] is not read again: reuse its slot for x y
      active[firing++] = n;
    }
  }
  for (int64_t i = 0; i < firing; ++i) {
    if (i + kAhead < firing) prefetch_row(dec + active[i + kAhead] * D, D, false);
    const T xy = xs[i];
    const T* __restrict__ row = dec + active[i] * D;
    for (int64_t d = 0; d < D; ++d) part[d] += xy * row[d];
  }
}

BDH_VECTOR_CLONES void head_layer_vec(const Weights<float>& w, int64_t h, const float* x,
                                      float* state, float* part, Workspace<float>& ws) {
  head_layer<float, false>(w, h, x, state, part, ws, 1.0f);
}

BDH_VECTOR_CLONES void head_layer_vec(const Weights<double>& w, int64_t h, const double* x,
                                      double* state, double* part, Workspace<double>& ws) {
  head_layer<double, false>(w, h, x, state, part, ws, 1.0);
}

BDH_VECTOR_CLONES void head_layer_damped_vec(const Weights<float>& w, int64_t h,
                                             const float* x, float* state, float* part,
                                             Workspace<float>& ws, float u) {
  head_layer<float, true>(w, h, x, state, part, ws, u);
}

BDH_VECTOR_CLONES void head_layer_damped_vec(const Weights<double>& w, int64_t h,
                                             const double* x, double* state, double* part,
                                             Workspace<double>& ws, double u) {
  head_layer<double, true>(w, h, x, state, part, ws, u);
}

// logits [V] = x [D] @ lm_head [D, V]
template <typename T>
__attribute__((always_inline)) inline void readout(const T* __restrict__ x,
                                                   const T* __restrict__ lm_head,
                                                   T* __restrict__ logits, int64_t D, int64_t V) {
  for (int64_t v = 0; v < V; ++v) logits[v] = 0;
  for (int64_t d = 0; d < D; ++d) {
    const T xd = x[d];
    const T* __restrict__ row = lm_head + d * V;
    for (int64_t v = 0; v < V; ++v) logits[v] += xd * row[v];
  }
}

BDH_VECTOR_CLONES void readout_vec(const float* x, const float* lm_head, float* logits,
                                   int64_t D, int64_t V) {
  readout(x, lm_head, logits, D, V);
}

BDH_VECTOR_CLONES void readout_vec(const double* x, const double* lm_head, double* logits,
                                   int64_t D, int64_t V) {
  readout(x, lm_head, logits, D, V);
}


// run(thread, count) on `threads` OpenMP threads (outside the dispatch macro: a pragma
// cannot sit in a macro's argument). A smaller team than asked for (the runtime may give
// one) must not wait at a barrier for threads that do not exist: the first does it all.
template <typename Run>
void run_in_team(int threads, const Run& run) {
  if (threads == 1) {
    run(0, 1);
    return;
  }
#pragma omp parallel num_threads(threads)
  {
    if (omp_get_num_threads() == threads) {
      run(omp_get_thread_num(), threads);
    } else if (omp_get_thread_num() == 0) {
      run(0, 1);
    }
  }
}
}  // namespace

// tokens [B] (int64); state [L, B, H, N, D] (updated in place); embed [V, D];
// encoder [H, D, N]; encoder_v_t [H, N, D]; decoder [H * N, D]; lm_head [D, V];
// rope [N / 2, 2]: the current position's phasors (cos, sin); decay None or [1 or H].
// Returns the logits [B, V]. All contiguous CPU tensors, the floating ones of one dtype
// (float32 or float64).
torch::Tensor decode_token(torch::Tensor tokens, torch::Tensor state, torch::Tensor embed,
                           torch::Tensor encoder, torch::Tensor encoder_v_t,
                           torch::Tensor decoder, torch::Tensor lm_head, torch::Tensor rope,
                           c10::optional<torch::Tensor> decay) {
  TORCH_CHECK(tokens.dim() == 1 && state.dim() == 5 && embed.dim() == 2 && encoder.dim() == 3 &&
                  encoder_v_t.dim() == 3 && decoder.dim() == 2 && lm_head.dim() == 2,
              "decode_token: shapes");
  const int64_t L = state.size(0), B = state.size(1), H = state.size(2), N = state.size(3),
                D = state.size(4), V = embed.size(0);
  TORCH_CHECK(tokens.size(0) == B && tokens.scalar_type() == torch::kLong &&
                  tokens.is_contiguous() && tokens.device().is_cpu(),
              "decode_token: tokens [B] int64");
  TORCH_CHECK(embed.size(1) == D, "decode_token: embed [V, D]");
  TORCH_CHECK(encoder.size(0) == H && encoder.size(1) == D && encoder.size(2) == N,
              "decode_token: encoder [H, D, N]");
  TORCH_CHECK(encoder_v_t.size(0) == H && encoder_v_t.size(1) == N && encoder_v_t.size(2) == D,
              "decode_token: encoder_v_t [H, N, D]");
  TORCH_CHECK(decoder.size(0) == H * N && decoder.size(1) == D, "decode_token: decoder [H N, D]");
  TORCH_CHECK(lm_head.size(0) == D && lm_head.size(1) == V, "decode_token: lm_head [D, V]");
  TORCH_CHECK(N % 2 == 0 && rope.numel() == N, "decode_token: rope [N / 2, 2]");
  for (const auto& t : {state, embed, encoder, encoder_v_t, decoder, lm_head, rope}) {
    TORCH_CHECK(t.is_contiguous() && t.device().is_cpu() && t.scalar_type() == state.scalar_type(),
                "decode_token: contiguous CPU tensors of one dtype");
  }
  const int64_t* ids = tokens.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(ids[b] >= 0 && ids[b] < V, "decode_token: token ", ids[b], " out of range [0, ", V,
                ")");
  }
  const bool damped = decay.has_value();
  int64_t Hu = 0;
  if (damped) {
    Hu = decay->numel();
    TORCH_CHECK(decay->dim() == 1 && (Hu == 1 || Hu == H) && decay->is_contiguous() &&
                    decay->scalar_type() == state.scalar_type(),
                "decode_token: decay [1 or H] of the state's dtype");
  }
  auto parts = torch::empty({2, B, H, D}, state.options());  // two: layer l+1 is written while l is read
  auto logits = torch::empty({B, V}, state.options());
  AT_DISPATCH_FLOATING_TYPES(state.scalar_type(), "decode_token", [&] {
    const Weights<scalar_t> w{encoder.data_ptr<scalar_t>(), encoder_v_t.data_ptr<scalar_t>(),
                              decoder.data_ptr<scalar_t>(), rope.data_ptr<scalar_t>(), H, N, D};
    const scalar_t* U = damped ? decay->data_ptr<scalar_t>() : nullptr;
    const int64_t tasks = B * H;
    const int64_t layer_bytes = tasks * N * D * static_cast<int64_t>(sizeof(scalar_t));
    const int threads = layer_bytes >= kParallelMinStateBytes && !omp_in_parallel()
                            ? static_cast<int>(std::min<int64_t>(at::get_num_threads(), tasks))
                            : 1;
    SpinBarrier barrier(threads);
    // Each thread keeps its own x [B, D], combined from all heads' parts after each layer,
    // so one barrier per layer suffices; thread 0's gives the logits.
    auto run = [&](int thread, int count) {
      std::vector<scalar_t> X(B * D), sum(D), normed(D), scratch(2 * N + 2 * D);
      std::vector<int64_t> active(N);
      Workspace<scalar_t> ws{scratch.data(), active.data()};
      for (int64_t b = 0; b < B; ++b) {  // x = LN(embedding)
        layer_norm(embed.data_ptr<scalar_t>() + ids[b] * D, X.data() + b * D, D);
      }
      // head-major tasks in contiguous ranges: a thread's tasks share one head's weights
      const int64_t chunk = (tasks + count - 1) / count;
      const int64_t begin = std::min<int64_t>(tasks, thread * chunk);
      const int64_t end = std::min<int64_t>(tasks, begin + chunk);
      for (int64_t level = 0; level < L; ++level) {
        scalar_t* S = state.data_ptr<scalar_t>() + level * B * H * N * D;
        scalar_t* P = parts.data_ptr<scalar_t>() + (level % 2) * B * H * D;
        for (int64_t task = begin; task < end; ++task) {
          const int64_t h = task / B, b = task % B, bh = b * H + h;
          if (damped) {
            head_layer_damped_vec(w, h, X.data() + b * D, S + bh * N * D, P + bh * D, ws,
                                  U[Hu == 1 ? 0 : h]);
          } else {
            head_layer_vec(w, h, X.data() + b * D, S + bh * N * D, P + bh * D, ws);
          }
        }
        if (count > 1) barrier.wait();  // every head's part of this layer is written
        for (int64_t b = 0; b < B; ++b) {  // x = LN(x + LN(sum over heads))
          for (int64_t d = 0; d < D; ++d) sum[d] = 0;
          for (int64_t h = 0; h < H; ++h) {
            for (int64_t d = 0; d < D; ++d) sum[d] += P[(b * H + h) * D + d];
          }
          layer_norm(sum.data(), normed.data(), D);
          scalar_t* xb = X.data() + b * D;
          for (int64_t d = 0; d < D; ++d) sum[d] = xb[d] + normed[d];
          layer_norm(sum.data(), xb, D);
        }
      }
      if (thread == 0) {
        for (int64_t b = 0; b < B; ++b) {
          readout_vec(X.data() + b * D, lm_head.data_ptr<scalar_t>(),
                      logits.data_ptr<scalar_t>() + b * V, D, V);
        }
      }
    };
    run_in_team(threads, run);
  });
  return logits;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("decode_token", &decode_token, "one decoding step: embedding, all layers, logits",
        py::arg("tokens"), py::arg("state"), py::arg("embed"), py::arg("encoder"),
        py::arg("encoder_v_t"), py::arg("decoder"), py::arg("lm_head"), py::arg("rope"),
        py::arg("decay") = py::none());
}
