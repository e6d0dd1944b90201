// k-winners-take-all masks on CPU: a radix select per row, then the mask in one pass.
//
// Each value maps to an unsigned key in the same order (NaN largest, as in torch.topk).
// The k-th largest key is found bit by bit from the top: a bit stays set when at least
// k keys reach the prefix with it. Keys at or above it win. Rows of 128 values cost about
// as much as torch.topk's unsorted selection and far less than its sorted one, which a
// count per row needs. Where several entries share the k-th value, which of them win is
// torch.topk's choice: those rows are handed to at::topk, exactly as the Python twin
// (naive.py) computes them, so the two masks are always equal.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

inline uint32_t order_key(float v) {
  if (std::isnan(v)) return 0xFFFFFFFFu;
  v += 0.0f;  // -0.0 becomes +0.0: torch.topk treats them as equal
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Fills the mask rows [begin, end); marks rows whose k-th value is tied instead.
template <typename scalar_t>
void select_rows(const scalar_t* z, const int64_t* ks, int64_t fixed_k, int64_t bound, int64_t n,
                 bool* mask, uint8_t* tied, int64_t begin, int64_t end) {
  std::vector<uint32_t> keys(n);
  for (int64_t r = begin; r < end; ++r) {
    int64_t k = ks ? std::min(ks[r], bound) : fixed_k;  // the twin keeps at most `bound`
    if (k <= 0) continue;
    const scalar_t* row = z + r * n;
    for (int64_t j = 0; j < n; ++j) keys[j] = order_key(static_cast<float>(row[j]));
    uint32_t kth = 0;
    for (int bit = 31; bit >= 0; --bit) {
      const uint32_t candidate = kth | (1u << bit);
      uint32_t reaching = 0;  // 32-bit, so that the loop vectorizes
      for (int64_t j = 0; j < n; ++j) reaching += keys[j] >= candidate;
      if (static_cast<int64_t>(reaching) >= k) kth = candidate;
    }
    int64_t winners = 0;
    bool* out = mask + r * n;
    for (int64_t j = 0; j < n; ++j) {
      out[j] = keys[j] >= kth;
      winners += out[j];
    }
    if (winners > k) tied[r] = 1;
  }
}

}  // namespace

// z [R, n]; ks: one integer count per row [R], or empty to use k for every row; k_max
// bounds the counts (negative: their maximum). Same contract as kwta_mask_naive, which
// refuses the same inputs.
torch::Tensor kwta_mask(torch::Tensor z, torch::Tensor ks, int64_t k, int64_t k_max) {
  TORCH_CHECK(z.dim() == 2 && z.device().is_cpu(), "kwta_mask: z must be a 2-D CPU tensor");
  auto values = z.contiguous();
  const int64_t rows = values.size(0), n = values.size(1);
  const bool per_row = ks.numel() > 0;
  auto counts = per_row ? ks.to(torch::kLong).contiguous() : ks;
  TORCH_CHECK(!per_row || counts.numel() == rows, "kwta_mask: one count per row");
  const int64_t bound = !per_row ? n : (k_max >= 0 ? k_max : counts.max().item<int64_t>());
  const int64_t selected = per_row ? bound : k;  // what the twin hands to torch.topk
  TORCH_CHECK(0 <= selected && selected <= n, "kwta_mask: selected index k out of range");
  auto mask = torch::zeros({rows, n}, values.options().dtype(torch::kBool));
  std::vector<uint8_t> tied(rows, 0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, values.scalar_type(), "kwta_mask", [&] {
    const scalar_t* zp = values.data_ptr<scalar_t>();
    const int64_t* kp = per_row ? counts.data_ptr<int64_t>() : nullptr;
    bool* mp = mask.data_ptr<bool>();
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      select_rows(zp, kp, k, bound, n, mp, tied.data(), begin, end);
    });
  });
  std::vector<int64_t> tied_rows;
  for (int64_t r = 0; r < rows; ++r)
    if (tied[r]) tied_rows.push_back(r);
  if (tied_rows.empty()) return mask;
  auto index = torch::tensor(tied_rows, torch::kLong);
  auto sub = values.index_select(0, index);
  auto sub_mask = torch::zeros_like(sub, sub.options().dtype(torch::kBool));
  if (!per_row) {
    auto top = std::get<1>(at::topk(sub, k, -1, /*largest=*/true, /*sorted=*/false));
    sub_mask.scatter_(-1, top, true);
  } else {
    auto sub_counts = counts.index_select(0, index);
    // the twin's bound: torch.topk's order among tied values depends on it
    auto top = std::get<1>(at::topk(sub, bound, -1, /*largest=*/true, /*sorted=*/true));
    auto keep = torch::arange(bound, sub_counts.options()).lt(sub_counts.unsqueeze(-1));
    sub_mask.scatter_(-1, top, keep);
  }
  mask.index_copy_(0, index, sub_mask);
  return mask;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("kwta_mask", &kwta_mask, "k-WTA mask per row"); }
