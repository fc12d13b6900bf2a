// One exception type for every user-facing failure: the message names the file/field and what is wrong.
#pragma once
#include <stdexcept>
#include <string>

namespace frozenlm {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

}  // namespace frozenlm
