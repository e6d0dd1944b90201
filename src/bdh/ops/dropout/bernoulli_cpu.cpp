// Bernoulli(p) draws from torch's default CPU generator, bitwise the ones
// `Tensor.bernoulli_(p)` draws there, and leaving the generator where it would leave it.
//
// torch draws them one element at a time (a serial loop through TensorIterator): two
// 32-bit words of the generator's mt19937 per element, x = w1 << 32 | w2, and the element
// is 1 when (x & (2^53 - 1)) * 2^-53 < p. In `small`'s training step, dropout's six masks
// of 8M elements took a fifth of the CPU time that way. Here the words are drawn in blocks
// and the test is an integer comparison, m < ceil(p * 2^53), which is the same test exactly
// (both sides of it scale by a power of two), in loops the compiler vectorizes.
#include <torch/extension.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdint>
#include <mutex>

namespace {

constexpr int kStateWords = 624;  // MERSENNE_STATE_N
constexpr int kShift = 397;       // MERSENNE_STATE_M
constexpr uint32_t kMatrixA = 0x9908b0df;
constexpr int64_t kBlock = 2048;  // elements per block of drawn words

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define BDH_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BDH_VECTOR_CLONES
#endif

inline uint32_t twisted(uint32_t u, uint32_t v) {
  return (((u & 0x80000000u) | (v & 0x7fffffffu)) >> 1) ^ ((v & 1u) ? kMatrixA : 0u);
}

// at::mt19937's next_state.
BDH_VECTOR_CLONES void next_state(uint32_t* s) {
  for (int i = 0; i < kStateWords - kShift; ++i) s[i] = s[i + kShift] ^ twisted(s[i], s[i + 1]);
  for (int i = kStateWords - kShift; i < kStateWords - 1; ++i)
    s[i] = s[i + kShift - kStateWords] ^ twisted(s[i], s[i + 1]);
  s[kStateWords - 1] = s[kShift - 1] ^ twisted(s[kStateWords - 1], s[0]);
}

BDH_VECTOR_CLONES void temper(const uint32_t* state, uint32_t* out, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    uint32_t y = state[i];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    out[i] = y;
  }
}

// The generator's next `count` words, as `count` calls of at::mt19937's operator() give
// them. `position` is the index of the next unused state word (624: the state is spent).
void draw_words(at::mt19937_data_pod& engine, int& position, uint32_t* out, int64_t count) {
  while (count > 0) {
    if (position == kStateWords) {
      next_state(engine.state_.data());
      position = 0;
    }
    const int64_t take = std::min<int64_t>(count, kStateWords - position);
    temper(engine.state_.data() + position, out, take);
    position += static_cast<int>(take);
    out += take;
    count -= take;
  }
}

// The samples written as the bit patterns of 0 and 1 in the tensor's type: a compare and
// a select the compiler vectorizes for 16-bit types too, which a store through
// c10::BFloat16's conversion is not.
template <typename bits_t>
BDH_VECTOR_CLONES void to_samples(const uint32_t* words, bits_t* out, int64_t count, uint64_t threshold,
                                  bits_t one) {
  for (int64_t i = 0; i < count; ++i) {
    const uint64_t mantissa = (static_cast<uint64_t>(words[2 * i] & 0x1fffffu) << 32) | words[2 * i + 1];
    out[i] = mantissa < threshold ? one : bits_t(0);
  }
}

template <typename bits_t>
void fill(at::Tensor& self, bits_t one, at::mt19937_data_pod& data, int& position, uint64_t threshold) {
  auto* out = static_cast<bits_t*>(self.data_ptr());
  const int64_t n = self.numel();
  uint32_t words[2 * kBlock];
  for (int64_t start = 0; start < n; start += kBlock) {
    const int64_t count = std::min(kBlock, n - start);
    draw_words(data, position, words, 2 * count);
    to_samples(words, out + start, count, threshold, one);
  }
}

at::Tensor bernoulli_(at::Tensor self, double p) {
  TORCH_CHECK(self.device().is_cpu() && self.is_contiguous(), "bernoulli_: a contiguous CPU tensor");
  TORCH_CHECK(self.is_floating_point(), "bernoulli_: float32, float64, bfloat16 or float16, got ", self.scalar_type());
  TORCH_CHECK(p >= 0.0 && p <= 1.0, "bernoulli_: p must be in [0, 1], got ", p);
  const int64_t n = self.numel();
  if (n == 0) return self;  // the generator untouched, as torch leaves it
  // (m * 2^-53 < p) == (m < p * 2^53) == (m < ceil(p * 2^53)) for an integer m.
  const uint64_t threshold = static_cast<uint64_t>(std::ceil(std::ldexp(p, 53)));
  at::Generator generator = at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(generator.mutex());
  auto* cpu_generator = at::check_generator<at::CPUGeneratorImpl>(generator);
  at::mt19937 engine = cpu_generator->engine();
  at::mt19937_data_pod data = engine.data();
  // `left_` counts down to the next refill: the next word is state[624 - (left_ - 1)].
  int position = kStateWords + 1 - data.left_;
  switch (self.scalar_type()) {  // the bits of 1.0 in each type
    case at::kFloat: fill<uint32_t>(self, 0x3f800000u, data, position, threshold); break;
    case at::kDouble: fill<uint64_t>(self, 0x3ff0000000000000ull, data, position, threshold); break;
    case at::kBFloat16: fill<uint16_t>(self, 0x3f80, data, position, threshold); break;
    case at::kHalf: fill<uint16_t>(self, 0x3c00, data, position, threshold); break;
    default: TORCH_CHECK(false, "bernoulli_: float32, float64, bfloat16 or float16, got ", self.scalar_type());
  }
  data.left_ = kStateWords + 1 - position;
  data.next_ = static_cast<uint32_t>(position);
  engine.set_data(data);
  cpu_generator->set_engine(engine);
  return self;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bernoulli_", &bernoulli_, "Tensor.bernoulli_(p) on torch's default CPU generator");
}
