// A Jinja2 renderer for chat templates: the subset of Jinja2 that the chat templates in models' tokenizer_config.json
// and GGUF files use, rendering byte-for-byte as Hugging Face transformers renders them with Jinja2
// (ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, the loopcontrols extension, tojson without ASCII
// escaping, raise_exception, strftime_now). No C++ Jinja library is packaged for Debian 12, hence this one.
//
// What it takes: text, {{ }}, {% %}, {# #} with '-' / '+' whitespace control; if/elif/else, for (tuple targets,
// `if` filters, else, loop.index/index0/revindex/revindex0/first/last/length/previtem/nextitem, break/continue),
// set (names, tuples, namespace attributes, set blocks), macros (defaults, keyword arguments), filter blocks;
// expressions with Python's literals, operators (and/or/not, comparisons, in/not in, + - * / // % **, ~, a if b
// else c), attribute and item access, slicing, calls; Python methods of str/dict that templates call (get, items,
// keys, values, startswith, endswith, strip, lstrip, rstrip, split, upper, lower, replace, title, capitalize);
// the filters and tests of jinja2.filters / jinja2.tests that templates use (see jinja.cpp). Undefined values
// behave as Jinja2's default Undefined: empty when printed or iterated, an error in arithmetic or attribute access.
// Strings are UTF-8; length, indexing and slicing count code points as Python does; upper/lower/title change ASCII
// letters only.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace frozenlm::jinja {

// A template that does not parse ("line N: ..."), or one that fails while rendering (raise_exception's message,
// an undefined variable used in arithmetic, a type error).
struct TemplateError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct RenderOptions {
  // strftime_now(format): the current local time by default (tests fix it).
  std::function<std::string(const std::string& format)> strftime_now;
  // Bounds on one render (a template is code: these keep a loop over range(10**9) or a string repeated without end
  // from holding a server thread or its memory): statements and loop iterations executed, bytes written.
  int64_t max_steps = 50'000'000;
  size_t max_output_bytes = size_t(64) << 20;
};

class Template {
 public:
  explicit Template(const std::string& source);  // throws TemplateError
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;
  // `variables`: a JSON object (messages, add_generation_prompt, bos_token, ...); its key order is kept (a dict's
  // order shows in tojson and in iteration, as in Python).
  std::string render(const nlohmann::ordered_json& variables, const RenderOptions& options = {}) const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace frozenlm::jinja
