// Writing files so that a crash leaves either the old or the new content, never a torn file: temporary + rename.
#pragma once
#include <string>

namespace frozenlm {

void write_file_atomically(const std::string& path, const std::string& bytes);

}  // namespace frozenlm
