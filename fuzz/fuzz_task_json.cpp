// libFuzzer target: task files. Any malformed task JSON must end in frozenlm::Error naming the file (never a raw
// nlohmann exception, crash or out-of-bounds access); an accepted task's templates render against a record.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "data/records.h"
#include "tasks/task.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    frozenlm::Task t = frozenlm::parse_task(std::string(reinterpret_cast<const char*>(data), size), "fuzz/task.json");
    if (t.max_tokens < 2 || t.splits.empty()) __builtin_trap();  // accepted means valid
    const nlohmann::json row = {{"text", "a"}, {"sentence", "b"}, {"label", 1}, {"answer", {"x", "y"}}};
    for (const std::string* tmpl : {&t.input, &t.target, &t.text}) {
      try {
        frozenlm::render_template(*tmpl, row, "fuzz");
      } catch (const frozenlm::Error&) {
      }
    }
  } catch (const frozenlm::Error&) {
  }
  return 0;
}
