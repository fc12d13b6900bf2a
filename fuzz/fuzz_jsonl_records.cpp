// libFuzzer target: data records. The first byte picks the format (.jsonl, .tsv, .json) and --skip-bad; the rest is
// the file. Malformed data ends in frozenlm::Error naming file:line; every accepted row has its location and renders.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "core/error.h"
#include "data/records.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const char* names[] = {"fuzz/data.jsonl", "fuzz/data.tsv", "fuzz/data.json"};
  frozenlm::ReadOptions opt;
  opt.skip_bad = data[0] & 4;
  opt.limit = (data[0] >> 3) & 7;
  std::istringstream in(std::string(reinterpret_cast<const char*>(data + 1), size - 1));
  try {
    auto r = frozenlm::read_records(in, names[data[0] % 3], opt);
    if (r.where.size() != r.rows.size() || (opt.limit && r.rows.size() > opt.limit)) __builtin_trap();
    for (auto& row : r.rows) {
      try {
        frozenlm::render_template("{text} / {label}", row, "fuzz");
      } catch (const frozenlm::Error&) {
      }
    }
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
