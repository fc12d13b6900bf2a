// FNV-1a, 64-bit: the one fingerprint hash of the project (checkpoint identity, frozen-weights hash, training data).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace frozenlm {

struct Fnv1a {
  uint64_t h = 1469598103934665603ull;
  void mix(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
  }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

}  // namespace frozenlm
