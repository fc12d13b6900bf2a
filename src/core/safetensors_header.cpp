// The safetensors header parser: no LibTorch here, so the fuzz target builds it alone.
#include "core/safetensors_header.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace frozenlm {

using nlohmann::json;

size_t st_dtype_size(StDtype d) {
  switch (d) {
    case StDtype::F64: case StDtype::I64: return 8;
    case StDtype::F32: case StDtype::I32: return 4;
    case StDtype::F16: case StDtype::BF16: case StDtype::I16: return 2;
    default: return 1;
  }
}

const char* st_dtype_name(StDtype d) {
  static const char* names[] = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL"};
  return names[static_cast<int>(d)];
}

static bool parse_dtype(const std::string& s, StDtype* out) {
  static const std::pair<const char*, StDtype> table[] = {
      {"F64", StDtype::F64}, {"F32", StDtype::F32}, {"F16", StDtype::F16}, {"BF16", StDtype::BF16},
      {"I64", StDtype::I64}, {"I32", StDtype::I32}, {"I16", StDtype::I16}, {"I8", StDtype::I8},
      {"U8", StDtype::U8},   {"BOOL", StDtype::BOOL}};
  for (auto& [n, d] : table)
    if (s == n) { *out = d; return true; }
  return false;
}

std::map<std::string, StTensorInfo> parse_safetensors_header(const uint8_t* bytes, size_t avail, uint64_t file_size,
                                                             const std::string& path, uint64_t* data_start) {
  auto fail = [&](const std::string& what) -> Error { return Error(path + ": invalid safetensors: " + what); };
  if (file_size < 8 || avail < 8) throw fail("file is " + std::to_string(file_size) + " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  if (n > file_size - 8) throw fail("header length " + std::to_string(n) + " runs beyond the end of the file (" + std::to_string(file_size) + " bytes)");
  if (n > avail - 8) throw fail("header truncated");
  json header;
  try {
    header = json::parse(bytes + 8, bytes + 8 + n);
  } catch (const json::exception& e) {
    throw fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const uint64_t data_size = file_size - 8 - n;
  std::map<std::string, StTensorInfo> out;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& e = it.value();
    auto tfail = [&](const std::string& what) { return fail("tensor '" + name + "': " + what); };
    if (!e.is_object()) throw tfail("entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) throw tfail("missing or non-string 'dtype'");
    if (!e.contains("shape") || !e["shape"].is_array()) throw tfail("missing or non-array 'shape'");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() || e["data_offsets"].size() != 2)
      throw tfail("'data_offsets' must be an array [begin, end]");
    StTensorInfo info;
    if (!parse_dtype(e["dtype"].get<std::string>(), &info.dtype)) throw tfail("unknown dtype '" + e["dtype"].get<std::string>() + "'");
    uint64_t numel = 1;
    for (const json& d : e["shape"]) {
      if (!d.is_number_unsigned()) throw tfail("shape entries must be non-negative integers");
      uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t(1) << 40) || (v != 0 && numel > (uint64_t(1) << 40) / v)) throw tfail("shape is absurdly large");
      numel *= v;
      info.shape.push_back(static_cast<int64_t>(v));
    }
    for (const json& o : e["data_offsets"])
      if (!o.is_number_unsigned()) throw tfail("data_offsets must be non-negative integers");
    info.begin = e["data_offsets"][0].get<uint64_t>();
    info.end = e["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end) throw tfail("data_offsets begin " + std::to_string(info.begin) + " > end " + std::to_string(info.end));
    if (info.end > data_size)
      throw tfail("data_offsets end " + std::to_string(info.end) + " is beyond the data section (" + std::to_string(data_size) + " bytes; file truncated?)");
    const uint64_t want = numel * st_dtype_size(info.dtype);
    if (info.end - info.begin != want)
      throw tfail("holds " + std::to_string(info.end - info.begin) + " bytes but shape × " + st_dtype_name(info.dtype) + " needs " + std::to_string(want));
    out.emplace(name, std::move(info));
  }
  // No two tensors may share bytes.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (auto& [name, info] : out)
    if (info.end > info.begin) spans.push_back({info.begin, info.end});
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i)
    if (spans[i].first < spans[i - 1].second)
      throw fail("tensor byte ranges overlap ([" + std::to_string(spans[i - 1].first) + ", " + std::to_string(spans[i - 1].second) +
                 ") and [" + std::to_string(spans[i].first) + ", " + std::to_string(spans[i].second) + "))");
  if (data_start) *data_start = 8 + n;
  return out;
}

}  // namespace frozenlm
