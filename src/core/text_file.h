// Reading a whole file into a string (header-only, so the torch-free parsers and their fuzz targets can use it).
#pragma once
#include <fstream>
#include <iterator>
#include <string>

namespace frozenlm {

// False when the file cannot be opened (the caller says why it wanted it).
inline bool read_text_file(const std::string& path, std::string* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  out->assign(std::istreambuf_iterator<char>(f), {});
  return true;
}

}  // namespace frozenlm
