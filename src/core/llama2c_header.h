// llama2.c legacy checkpoint header: 7 little-endian int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size — negative when the classifier is not shared —, seq_len), then fp32 arrays in a fixed order.
// Torch-free, so that the fuzz target can run it alone.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/model_config.h"

namespace frozenlm {

// Validates the header in bytes[0, avail) of a file of `file_size` bytes and returns the model shape; *expected_size
// (optional): the bytes the weights need. Throws frozenlm::Error naming `path` (too short, implausible sizes,
// truncated file).
ModelConfig parse_llama2c_header(const uint8_t* bytes, size_t avail, int64_t file_size, const std::string& path,
                                 int64_t* expected_size = nullptr);

}  // namespace frozenlm
