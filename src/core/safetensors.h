// safetensors reader: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the raw little-endian tensor bytes. The header is fully validated before any byte is used.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <ATen/Tensor.h>

namespace frozenlm {

enum class StDtype { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

struct StTensorInfo {
  StDtype dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets into the data section
};

// Parses and validates a header. `bytes` is the start of the file (at least 8 bytes + header), `file_size` the
// whole file's size. Throws frozenlm::Error naming `path` and the problem (header length beyond the file, bad
// JSON, unknown dtype, negative shape, offsets out of range or overlapping, size not matching shape × dtype).
std::map<std::string, StTensorInfo> parse_safetensors_header(const uint8_t* bytes, size_t avail, uint64_t file_size,
                                                             const std::string& path, uint64_t* data_start = nullptr);

size_t st_dtype_size(StDtype d);
const char* st_dtype_name(StDtype d);

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

// Writes float32 tensors as a safetensors file (atomically: temporary file + rename). Used by tests and tools.
void write_safetensors_f32(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors);

}  // namespace frozenlm
