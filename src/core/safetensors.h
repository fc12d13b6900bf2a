// safetensors files: memory-mapped reading (after full header validation) and an atomic fp32 writer.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

#include "core/safetensors_header.h"

namespace frozenlm {

// A memory-mapped safetensors file.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::map<std::string, StTensorInfo>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  // The tensor converted to float32 (a fresh CPU tensor owning its memory).
  at::Tensor get_f32(const std::string& name) const;

 private:
  std::string path_;
  std::map<std::string, StTensorInfo> tensors_;
  const uint8_t* map_ = nullptr;
  size_t size_ = 0;
  uint64_t data_start_ = 0;
};

// Writes F32/F16/BF16 tensors (each in its own dtype) as a safetensors file, atomically (temporary file + rename).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace frozenlm
