// On/off switches read from the environment (FROZENLM_HUGE_PAGES, FROZENLM_PANEL_KERNELS): 0/off/false/no and
// 1/on/true/yes; anything else keeps the default and says so on stderr, so that a typo never silently flips a switch.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <string>

namespace frozenlm {

inline bool env_on_off(const char* name, bool fallback) {
  const char* v = std::getenv(name);
  if (!v) return fallback;
  const std::string s(v);
  if (s == "0" || s == "off" || s == "false" || s == "no") return false;
  if (s == "1" || s == "on" || s == "true" || s == "yes") return true;
  std::fprintf(stderr, "frozenlm: %s=%s is not 0/1 (off/on); keeping it %s\n", name, v, fallback ? "on" : "off");
  return fallback;
}

}  // namespace frozenlm
