#include <gtest/gtest.h>

#include "core/runtime.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  frozenlm::init_runtime(0);
  return RUN_ALL_TESTS();
}
