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

#include "core/atomic_file.h"
#include "core/error.h"
#include "core/torch_pch.h"

namespace frozenlm {

using nlohmann::json;

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

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};  // transformers refuses files without it
  uint64_t off = 0;
  std::vector<at::Tensor> data;
  for (auto& [name, t] : tensors) {
    at::Tensor c = t.detach().to(at::kCPU).contiguous();
    const char* dt = c.scalar_type() == at::kFloat ? "F32" : c.scalar_type() == at::kHalf ? "F16" : c.scalar_type() == at::kBFloat16 ? "BF16" : nullptr;
    if (!dt) throw Error(path + ": write_safetensors: tensor '" + name + "' must be F32, F16 or BF16");
    const uint64_t n = c.numel() * c.element_size();
    header[name] = {{"dtype", dt}, {"shape", c.sizes().vec()}, {"data_offsets", {off, off + n}}};
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
    for (auto& t : data) f.write(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    f.flush();
    if (!f) throw Error(tmp + ": write failed");
  }
  fsync_path(tmp);  // durable before it replaces the old file
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": rename failed");
}

}  // namespace frozenlm
