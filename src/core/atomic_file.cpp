#include "core/atomic_file.h"

#include <cstdio>
#include <fstream>

#include "core/error.h"

namespace frozenlm {

void write_file_atomically(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary);
    if (!f) throw Error(tmp + ": cannot write");
    f << bytes;
    f.flush();
    if (!f) throw Error(tmp + ": write failed");
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) throw Error(path + ": rename failed");
}

}  // namespace frozenlm
