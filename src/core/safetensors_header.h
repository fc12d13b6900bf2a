// safetensors header: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the raw little-endian tensor bytes. The header is fully validated before any byte is used.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

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

}  // namespace frozenlm
