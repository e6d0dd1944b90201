// A caching CPU allocator: while enabled, freed tensor buffers are kept, keyed by their
// exact size, and handed out again to the next request of that size.
//
// Why: glibc serves every large request with a fresh mmap and unmaps it on free, so each
// training step faults all of its activation pages in again (about 650,000 minor faults
// per step of the small preset). A training step repeats the same shapes, so exact-size
// reuse finds almost every buffer. glibc's own knobs (mallopt) are process-wide and cannot
// be put back, which would also change code this process compares itself against.
//
// Installed once as torch's CPU allocator, it stays installed. Disabled, it hands every
// request to torch's default allocator and frees as the default does. Every buffer it
// returns carries its own deleter (data == context, a "simple" pointer as the default's),
// which looks the pointer up among the buffers handed out while enabled: those go back to
// the cache if it is still enabled and under its cap, and are freed otherwise (also after
// it was disabled); any other pointer goes to the default's deleter. Fresh buffers come
// from the default allocator, with its alignment (64 bytes) and profiler reports; a reuse
// is not reported to the profiler.
#include <torch/extension.h>

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace {

// (enabled, cap, cached bytes, hits, misses, buffers in use that return to the cache)
using Stats = std::tuple<bool, int64_t, int64_t, int64_t, int64_t, int64_t>;

class CachingCPUAllocator final : public at::Allocator {
 public:
  explicit CachingCPUAllocator(at::Allocator* fallback)
      : fallback_(fallback), fallback_delete_(fallback->raw_deleter()) {}

  at::DataPtr allocate(size_t nbytes) override {
    if (enabled_.load(std::memory_order_acquire) && nbytes > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      void* data = nullptr;
      auto found = free_.find(nbytes);
      if (found != free_.end() && !found->second.empty()) {
        data = found->second.back();
        found->second.pop_back();
        cached_bytes_ -= nbytes;
        ++hits_;
      } else {
        data = fallback_->raw_allocate(nbytes);
        ++misses_;
      }
      handed_out_.emplace(data, nbytes);
      tracked_.fetch_add(1, std::memory_order_release);
      return {data, data, &Delete, at::Device(at::DeviceType::CPU)};
    }
    void* data = fallback_->raw_allocate(nbytes);
    return {data, data, &Delete, at::Device(at::DeviceType::CPU)};
  }

  at::DeleterFnPtr raw_deleter() const override { return &Delete; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  void enable(int64_t max_cached_bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    cap_ = max_cached_bytes < 0 ? 0 : static_cast<size_t>(max_cached_bytes);
    enabled_.store(true, std::memory_order_release);
  }

  void disable() { enabled_.store(false, std::memory_order_release); }

  // Frees every cached buffer; returns the bytes freed. Buffers in use are not touched.
  int64_t release() {
    std::vector<void*> doomed;
    size_t freed = 0;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      for (auto& entry : free_) {
        doomed.insert(doomed.end(), entry.second.begin(), entry.second.end());
      }
      free_.clear();
      freed = cached_bytes_;
      cached_bytes_ = 0;
    }
    for (void* data : doomed) fallback_delete_(data);
    return static_cast<int64_t>(freed);
  }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {enabled_.load(), static_cast<int64_t>(cap_), static_cast<int64_t>(cached_bytes_), hits_, misses_,
            static_cast<int64_t>(handed_out_.size())};
  }

  static CachingCPUAllocator* instance;

 private:
  static void Delete(void* data) {
    if (data == nullptr) return;
    instance->give_back(data);
  }

  void give_back(void* data) {
    // Nothing handed out while enabled is alive: a plain default buffer, no lock needed.
    if (tracked_.load(std::memory_order_acquire) > 0) {
      std::unique_lock<std::mutex> lock(mutex_);
      auto found = handed_out_.find(data);
      if (found != handed_out_.end()) {
        size_t nbytes = found->second;
        handed_out_.erase(found);
        tracked_.fetch_sub(1, std::memory_order_release);
        if (enabled_.load(std::memory_order_acquire) && cached_bytes_ + nbytes <= cap_) {
          free_[nbytes].push_back(data);
          cached_bytes_ += nbytes;
          return;
        }
      }
    }
    fallback_delete_(data);
  }

  at::Allocator* fallback_;
  at::DeleterFnPtr fallback_delete_;
  std::mutex mutex_;
  std::atomic<bool> enabled_{false};
  std::atomic<int64_t> tracked_{0};
  std::unordered_map<size_t, std::vector<void*>> free_;
  std::unordered_map<void*, size_t> handed_out_;
  size_t cached_bytes_ = 0;
  size_t cap_ = 0;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
};

CachingCPUAllocator* CachingCPUAllocator::instance = nullptr;

// Installs the allocator on the first call (never uninstalled, never destroyed: buffers it
// handed out may be freed at any time, up to interpreter exit). False where torch keeps
// another CPU allocator of higher priority, or the default offers no raw deleter.
bool install() {
  static std::once_flag once;
  std::call_once(once, [] {
    at::Allocator* fallback = c10::GetDefaultCPUAllocator();
    if (fallback->raw_deleter() == nullptr || c10::GetCPUAllocator() != fallback) return;
    CachingCPUAllocator::instance = new CachingCPUAllocator(fallback);
    c10::SetCPUAllocator(CachingCPUAllocator::instance);
  });
  return CachingCPUAllocator::instance != nullptr && c10::GetCPUAllocator() == CachingCPUAllocator::instance;
}

bool enable(int64_t max_cached_bytes) {
  if (!install()) return false;
  CachingCPUAllocator::instance->enable(max_cached_bytes);
  return true;
}

void disable() {
  if (CachingCPUAllocator::instance != nullptr) CachingCPUAllocator::instance->disable();
}

int64_t release() { return CachingCPUAllocator::instance ? CachingCPUAllocator::instance->release() : 0; }

Stats stats() {
  if (CachingCPUAllocator::instance == nullptr) return {false, 0, 0, 0, 0, 0};
  return CachingCPUAllocator::instance->stats();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("enable", &enable, "cache freed CPU buffers, up to max_cached_bytes; False if not installable");
  m.def("disable", &disable, "stop caching: allocate and free through the default allocator");
  m.def("release", &release, "free the cached buffers; returns the bytes freed");
  m.def("stats", &stats, "(enabled, cap, cached bytes, hits, misses, cache-bound buffers in use)");
}
