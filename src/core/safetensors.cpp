#include "core/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/torch_pch.h"

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
  std::vector<const std::string*> names;
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

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) throw Error(path + ": mmap failed: " + std::strerror(errno));
    map_ = static_cast<const uint8_t*>(p);
  } else {
    ::close(fd);
  }
  try {
    static const uint8_t empty[8] = {};
    tensors_ = parse_safetensors_header(map_ ? map_ : empty, size_, size_, path, &data_start_);
  } catch (...) {
    if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) ::munmap(const_cast<uint8_t*>(map_), size_);
}

at::Tensor SafetensorsFile::get_f32(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": tensor '" + name + "' not found");
  const StTensorInfo& info = it->second;
  at::ScalarType st;
  switch (info.dtype) {
    case StDtype::F64: st = at::kDouble; break;
    case StDtype::F32: st = at::kFloat; break;
    case StDtype::F16: st = at::kHalf; break;
    case StDtype::BF16: st = at::kBFloat16; break;
    case StDtype::I64: st = at::kLong; break;
    case StDtype::I32: st = at::kInt; break;
    case StDtype::I16: st = at::kShort; break;
    case StDtype::I8: st = at::kChar; break;
    case StDtype::U8: st = at::kByte; break;
    default: st = at::kBool; break;
  }
  // Copy out of the mapping (the data section need not be aligned for the dtype).
  at::Tensor raw = at::empty(info.shape, at::TensorOptions().dtype(st));
  if (info.end > info.begin) std::memcpy(raw.data_ptr(), map_ + data_start_ + info.begin, info.end - info.begin);
  return st == at::kFloat ? raw : raw.to(at::kFloat);
}

void write_safetensors_f32(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  json header = json::object();
  uint64_t off = 0;
  std::vector<at::Tensor> data;
  for (auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU, at::kFloat).contiguous();
    uint64_t n = c.numel() * 4;
    header[name] = {{"dtype", "F32"}, {"shape", c.sizes().vec()}, {"data_offsets", {off, off + n}}};
    off += n;
    data.push_back(c);
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(tmp + ": cannot write");
    uint64_t n = h.size();
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
    f.write(reinterpret_cast<const char*>(len), 8);
    f.write(h.data(), h.size());
    for (auto& t : data) f.write(static_cast<const char*>(t.data_ptr()), t.numel() * 4);
    f.flush();
    if (!f) throw Error(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": rename failed");
}

}  // namespace frozenlm
