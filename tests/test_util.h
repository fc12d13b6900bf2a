// Helpers shared by the tests: fixture paths, JSON loading, temporary directories.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "core/torch_pch.h"

namespace frozenlm::test {

inline std::string fixtures() { return FROZENLM_FIXTURES; }
inline std::string shared() { return FROZENLM_SHARED; }
inline std::string tinystories() { return shared() + "/models/tinystories-656k"; }
inline std::string stories260k() { return shared() + "/models/stories260k/stories260K.bin"; }
inline std::string tok512() { return shared() + "/models/stories260k/tok512.bin"; }

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": missing (did the make_reference_fixtures test run?)");
  return nlohmann::json::parse(f);
}

inline at::Tensor json_to_tensor(const nlohmann::json& j, at::ScalarType t) {
  std::vector<double> flat;
  std::vector<int64_t> shape;
  const nlohmann::json* cur = &j;
  while (cur->is_array()) { shape.push_back(cur->size()); if (cur->empty()) break; cur = &(*cur)[0]; }
  std::function<void(const nlohmann::json&)> rec = [&](const nlohmann::json& x) {
    if (x.is_array()) for (auto& y : x) rec(y);
    else flat.push_back(x.get<double>());
  };
  rec(j);
  return at::tensor(flat, at::kDouble).view(shape).to(t);
}

// A fresh empty directory under the build tree.
inline std::string temp_dir(const std::string& name) {
  std::string d = fixtures() + "/tmp-" + name;
  std::string cmd = "rm -rf '" + d + "' && mkdir -p '" + d + "'";
  if (std::system(cmd.c_str()) != 0) throw std::runtime_error("cannot create " + d);
  return d;
}

// Central finite difference of `loss` in flat entry i of `param` (fp64) against its autograd gradient.
inline void expect_fd_gradient(const at::Tensor& param, int64_t i, const std::function<at::Tensor()>& loss, const std::string& what) {
  at::NoGradGuard ng;
  const double h = 1e-6;
  at::Tensor flat = param.view({-1});
  const double g = param.grad().view({-1})[i].item<double>();
  const double orig = flat[i].item<double>();
  flat[i] = orig + h;
  const double up = loss().item<double>();
  flat[i] = orig - h;
  const double down = loss().item<double>();
  flat[i] = orig;
  EXPECT_NEAR(g, (up - down) / (2 * h), 1e-7 * std::max(1.0, std::abs(g))) << what << "[" << i << "]";
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}

inline std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace frozenlm::test
