#include "chat/jinja.h"

#include "tokenizer/unicode.h"

#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

namespace frozenlm::jinja {

namespace {

[[noreturn]] void fail(const std::string& message) { throw TemplateError(message); }

// ---------------------------------------------------------------------------------------------------------------
// Values: Python's None, bool, int, float, str, list, tuple, dict, Jinja2's Undefined and namespace, and callables.

struct Value;
using Array = std::vector<Value>;
using Object = std::vector<std::pair<std::string, Value>>;  // insertion-ordered, as Python's dict
struct Args;
using Function = std::function<Value(Args&)>;

struct Value {
  // Iterator: what jinja2's map/select/reject/selectattr/rejectattr/unique/items/reverse filters return — a Python
  // generator: it iterates, but has no length, no items by index, no JSON form, and is true even when empty.
  enum Kind { Undefined, None, Bool, Int, Float, String, List, Tuple, Iterator, Dict, Namespace, Callable } kind = Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;                    // String; Undefined: the name that was looked up (for its error)
  std::shared_ptr<Array> arr;       // List, Tuple, Iterator
  std::shared_ptr<Object> obj;      // Dict, Namespace (shared: a namespace is assigned through)
  std::shared_ptr<Function> fn;     // Callable

  static Value undefined(std::string name = "") { Value v; v.s = std::move(name); return v; }
  static Value none() { Value v; v.kind = None; return v; }
  static Value boolean(bool x) { Value v; v.kind = Bool; v.b = x; return v; }
  static Value integer(int64_t x) { Value v; v.kind = Int; v.i = x; return v; }
  static Value real(double x) { Value v; v.kind = Float; v.f = x; return v; }
  static Value str(std::string x) { Value v; v.kind = String; v.s = std::move(x); return v; }
  static Value list(Array a = {}, bool tuple = false) {
    Value v;
    v.kind = tuple ? Tuple : List;
    v.arr = std::make_shared<Array>(std::move(a));
    return v;
  }
  static Value iterator(Array a) {
    Value v = list(std::move(a));
    v.kind = Iterator;
    return v;
  }
  static Value dict(Object o = {}, bool ns = false) {
    Value v;
    v.kind = ns ? Namespace : Dict;
    v.obj = std::make_shared<Object>(std::move(o));
    return v;
  }
  static Value callable(Function f) {
    Value v;
    v.kind = Callable;
    v.fn = std::make_shared<Function>(std::move(f));
    return v;
  }
  bool is_undefined() const { return kind == Undefined; }
  bool is_none() const { return kind == None; }
  bool is_number() const { return kind == Int || kind == Float || kind == Bool; }
  bool is_seq() const { return kind == List || kind == Tuple; }
  bool is_map() const { return kind == Dict || kind == Namespace; }
  double num() const { return kind == Float ? f : kind == Bool ? double(b) : double(i); }
  const Value* find(const std::string& key) const {
    if (!obj) return nullptr;
    for (auto& [k, v] : *obj)
      if (k == key) return &v;
    return nullptr;
  }
};

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
  // The n-th argument, by position or by name; `dflt` when absent.
  Value get(size_t n, const char* name, Value dflt = Value::undefined()) const {
    for (auto& [k, v] : kw)
      if (k == name) return v;
    return n < pos.size() ? pos[n] : dflt;
  }
  bool has(size_t n, const char* name) const {
    for (auto& [k, v] : kw)
      if (k == name) return true;
    return n < pos.size();
  }
};

const char* type_name(const Value& v) {
  switch (v.kind) {
    case Value::Undefined: return "Undefined";
    case Value::None: return "NoneType";
    case Value::Bool: return "bool";
    case Value::Int: return "int";
    case Value::Float: return "float";
    case Value::String: return "str";
    case Value::List: return "list";
    case Value::Tuple: return "tuple";
    case Value::Iterator: return "generator";
    case Value::Dict: return "dict";
    case Value::Namespace: return "Namespace";
    case Value::Callable: return "function";
  }
  return "?";
}

[[noreturn]] void undefined_error(const Value& v) {
  fail(v.s.empty() ? "UndefinedError: an undefined value was used" : "UndefinedError: '" + v.s + "' is undefined");
}

// ---- UTF-8: Python counts code points ----

std::vector<size_t> code_point_starts(const std::string& s) {
  std::vector<size_t> at;
  for (size_t i = 0; i < s.size(); ++i)
    if ((static_cast<unsigned char>(s[i]) & 0xC0) != 0x80) at.push_back(i);
  return at;
}

uint32_t decode_at(const std::string& s, size_t i, size_t* len) {
  const unsigned char c = s[i];
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (i + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  *len = size_t(n);
  return cp;
}

bool py_isspace(uint32_t c) { return unicode::is_python_space(c); }

// str.strip / lstrip / rstrip: whitespace (Python's str.isspace), or any of `chars`' code points.
std::string py_strip(const std::string& s, const Value& chars, bool left, bool right) {
  std::vector<uint32_t> set;
  const bool ws = chars.is_undefined() || chars.is_none();
  if (!ws) {
    if (chars.kind != Value::String) fail("TypeError: strip arg must be None or str");
    for (size_t i = 0, n; i < chars.s.size(); i += n) set.push_back(decode_at(chars.s, i, &n));
  }
  auto strip_it = [&](uint32_t c) { return ws ? py_isspace(c) : std::find(set.begin(), set.end(), c) != set.end(); };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e) {
      size_t n;
      if (!strip_it(decode_at(s, b, &n))) break;
      b += n;
    }
  if (right)
    while (e > b) {
      size_t p = e - 1;
      while (p > b && (static_cast<unsigned char>(s[p]) & 0xC0) == 0x80) --p;
      size_t n;
      if (!strip_it(decode_at(s, p, &n))) break;
      e = p;
    }
  return s.substr(b, e - b);
}

using unicode::append_utf8;

// Unicode simple case mapping (glibc's C.UTF-8 tables), as Python's str.upper/lower for all but the few characters
// whose full mapping changes length (ß -> SS).
locale_t utf8_locale() {
  static locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t(0));
  return loc;
}
uint32_t to_upper(uint32_t c) { return c < 0x80 ? uint32_t(std::toupper(int(c))) : utf8_locale() ? uint32_t(towupper_l(wint_t(c), utf8_locale())) : c; }
uint32_t to_lower(uint32_t c) { return unicode::to_lower(c); }
bool is_cased(uint32_t c) { return to_upper(c) != c || to_lower(c) != c; }

std::string map_case(const std::string& s, uint32_t (*f)(uint32_t)) {
  std::string out;
  for (size_t i = 0, n; i < s.size(); i += n) append_utf8(out, f(decode_at(s, i, &n)));
  return out;
}
std::string upper(const std::string& s) { return map_case(s, to_upper); }
std::string lower(const std::string& s) { return map_case(s, to_lower); }

// str.capitalize: the first character upper, the rest lower.
std::string capitalize(const std::string& s) {
  std::string out;
  for (size_t i = 0, n; i < s.size(); i += n) append_utf8(out, i == 0 ? to_upper(decode_at(s, i, &n)) : to_lower(decode_at(s, i, &n)));
  return out;
}

// str.title: a cased character after an uncased one is upper, after a cased one lower.
std::string py_title(const std::string& s) {
  std::string out;
  bool prev_cased = false;
  for (size_t i = 0, n; i < s.size(); i += n) {
    const uint32_t c = decode_at(s, i, &n);
    append_utf8(out, prev_cased ? to_lower(c) : to_upper(c));
    prev_cased = is_cased(c);
  }
  return out;
}

// jinja2's title filter: each piece between runs of [-\s({[<] capitalized.
std::string jinja_title(const std::string& s) {
  std::string out;
  bool start = true;
  for (size_t i = 0, n; i < s.size(); i += n) {
    const uint32_t c = decode_at(s, i, &n);
    const bool sep = c == '-' || c == '(' || c == '{' || c == '[' || c == '<' || py_isspace(c);
    append_utf8(out, sep ? c : start ? to_upper(c) : to_lower(c));
    start = sep;
  }
  return out;
}

// ---- Python's str() and repr() ----

std::string py_float(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char buf[40];
  for (int prec = 1; prec <= 17; ++prec) {  // the shortest that reads back the same (repr)
    std::snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  // buf: d.ddde±XX; Python writes positional for exponents in [-4, 16), scientific otherwise.
  std::string m(buf);
  const size_t e = m.find('e');
  const int exp = std::atoi(m.c_str() + e + 1);
  std::string digits;
  const bool neg = m[0] == '-';
  for (size_t k = neg ? 1 : 0; k < e; ++k)
    if (m[k] != '.') digits += m[k];
  std::string out = neg ? "-" : "";
  if (exp >= -5 + 1 && exp < 16) {
    if (exp >= 0) {
      if (int(digits.size()) <= exp + 1) out += digits + std::string(exp + 1 - digits.size(), '0') + ".0";
      else out += digits.substr(0, exp + 1) + "." + digits.substr(exp + 1);
    } else {
      out += "0." + std::string(-exp - 1, '0') + digits;
    }
  } else {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', std::abs(exp));
    out += eb;
  }
  return out;
}

std::string py_repr(const Value& v);

std::string py_str(const Value& v) {
  switch (v.kind) {
    case Value::Undefined: return "";
    case Value::None: return "None";
    case Value::Bool: return v.b ? "True" : "False";
    case Value::Int: return std::to_string(v.i);
    case Value::Float: return py_float(v.f);
    case Value::String: return v.s;
    case Value::Namespace: return "<Namespace>";
    case Value::Callable: return "<function>";
    case Value::Iterator: return "<generator object>";
    default: return py_repr(v);
  }
}

std::string py_repr_str(const std::string& s) {
  const bool has_single = s.find('\'') != std::string::npos, has_double = s.find('"') != std::string::npos;
  const char q = has_single && !has_double ? '"' : '\'';
  std::string out(1, q);
  for (size_t i = 0, n; i < s.size(); i += n) {
    const uint32_t c = decode_at(s, i, &n);
    if (c == uint32_t(q) || c == '\\') out += '\\', out += char(c);
    else if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7F) {
      char b[8];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    } else {
      out += s.substr(i, n);
    }
  }
  return out + q;
}

std::string py_repr(const Value& v) {
  switch (v.kind) {
    case Value::String: return py_repr_str(v.s);
    case Value::List:
    case Value::Tuple: {
      std::string out = v.kind == Value::List ? "[" : "(";
      for (size_t k = 0; k < v.arr->size(); ++k) out += (k ? ", " : "") + py_repr((*v.arr)[k]);
      if (v.kind == Value::Tuple && v.arr->size() == 1) out += ",";
      return out + (v.kind == Value::List ? "]" : ")");
    }
    case Value::Dict: {
      std::string out = "{";
      for (size_t k = 0; k < v.obj->size(); ++k) out += (k ? ", " : "") + py_repr_str((*v.obj)[k].first) + ": " + py_repr((*v.obj)[k].second);
      return out + "}";
    }
    default: return py_str(v);
  }
}

// ---- json.dumps(ensure_ascii=False, indent, separators, sort_keys) ----

void json_str(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char b[8];
          std::snprintf(b, sizeof b, "\\u%04x", c);
          out += b;
        } else {
          out += char(c);
        }
    }
  }
  out += '"';
}

struct JsonStyle {
  int indent = -1;  // -1: none
  std::string item_sep = ", ", key_sep = ": ";
  bool sort_keys = false;
};

void to_json(const Value& v, const JsonStyle& st, int depth, std::string& out) {
  auto newline = [&](int d) {
    if (st.indent < 0) return;
    out += '\n';
    out += std::string(size_t(st.indent) * size_t(d), ' ');
  };
  switch (v.kind) {
    case Value::None: out += "null"; return;
    case Value::Bool: out += v.b ? "true" : "false"; return;
    case Value::Int: out += std::to_string(v.i); return;
    case Value::Float:
      out += std::isnan(v.f) ? "NaN" : std::isinf(v.f) ? (v.f > 0 ? "Infinity" : "-Infinity") : py_float(v.f);
      return;
    case Value::String: json_str(v.s, out); return;
    case Value::List:
    case Value::Tuple: {
      if (v.arr->empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < v.arr->size(); ++k) {
        if (k) out += st.item_sep;
        newline(depth + 1);
        to_json((*v.arr)[k], st, depth + 1, out);
      }
      newline(depth);
      out += ']';
      return;
    }
    case Value::Dict: {
      if (v.obj->empty()) {
        out += "{}";
        return;
      }
      std::vector<const std::pair<std::string, Value>*> items;
      for (auto& kv : *v.obj) items.push_back(&kv);
      if (st.sort_keys) std::stable_sort(items.begin(), items.end(), [](auto* a, auto* b) { return a->first < b->first; });
      out += '{';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += st.item_sep;
        newline(depth + 1);
        json_str(items[k]->first, out);
        out += st.key_sep;
        to_json(items[k]->second, st, depth + 1, out);
      }
      newline(depth);
      out += '}';
      return;
    }
    default: fail(std::string("TypeError: Object of type ") + type_name(v) + " is not JSON serializable");
  }
}

Value from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null: return Value::none();
    case nlohmann::ordered_json::value_t::boolean: return Value::boolean(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer: return Value::integer(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: return Value::integer(int64_t(j.get<uint64_t>()));
    case nlohmann::ordered_json::value_t::number_float: return Value::real(j.get<double>());
    case nlohmann::ordered_json::value_t::string: return Value::str(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      Array a;
      for (auto& x : j) a.push_back(from_json(x));
      return Value::list(std::move(a));
    }
    case nlohmann::ordered_json::value_t::object: {
      Object o;
      for (auto it = j.begin(); it != j.end(); ++it) o.emplace_back(it.key(), from_json(it.value()));
      return Value::dict(std::move(o));
    }
    default: return Value::none();
  }
}

// ---- truth, equality, order ----

bool truthy(const Value& v) {
  switch (v.kind) {
    case Value::Undefined:
    case Value::None: return false;
    case Value::Bool: return v.b;
    case Value::Int: return v.i != 0;
    case Value::Float: return v.f != 0;
    case Value::String: return !v.s.empty();
    case Value::List:
    case Value::Tuple: return !v.arr->empty();
    case Value::Dict: return !v.obj->empty();
    default: return true;
  }
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::Float || b.kind == Value::Float) return a.num() == b.num();
    return int64_t(a.num()) == int64_t(b.num()) && (a.kind == Value::Int ? a.i : int64_t(a.b)) == (b.kind == Value::Int ? b.i : int64_t(b.b));
  }
  if (a.is_seq() && b.is_seq()) {
    if (a.kind != b.kind || a.arr->size() != b.arr->size()) return false;
    for (size_t k = 0; k < a.arr->size(); ++k)
      if (!equal((*a.arr)[k], (*b.arr)[k])) return false;
    return true;
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Undefined:
    case Value::None: return true;
    case Value::String: return a.s == b.s;
    case Value::Dict: {
      if (a.obj->size() != b.obj->size()) return false;
      for (auto& [k, v] : *a.obj) {
        const Value* o = b.find(k);
        if (!o || !equal(v, *o)) return false;
      }
      return true;
    }
    default: return a.obj == b.obj && a.fn == b.fn && a.arr == b.arr;
  }
}

int compare(const Value& a, const Value& b, const char* op) {
  if (a.is_number() && b.is_number()) return a.num() < b.num() ? -1 : a.num() > b.num() ? 1 : 0;
  if (a.kind == Value::String && b.kind == Value::String) return a.s < b.s ? -1 : a.s > b.s ? 1 : 0;
  if (a.is_seq() && b.is_seq()) {
    for (size_t k = 0; k < std::min(a.arr->size(), b.arr->size()); ++k) {
      if (equal((*a.arr)[k], (*b.arr)[k])) continue;
      return compare((*a.arr)[k], (*b.arr)[k], op);
    }
    return a.arr->size() < b.arr->size() ? -1 : a.arr->size() > b.arr->size() ? 1 : 0;
  }
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  fail(std::string("TypeError: '") + op + "' not supported between instances of '" + type_name(a) + "' and '" + type_name(b) + "'");
}

// Iterating a value as Python does: a list's items, a dict's keys, a string's characters; Undefined: nothing.
Array iterate(const Value& v) {
  switch (v.kind) {
    case Value::Undefined: return {};
    case Value::List:
    case Value::Tuple:
    case Value::Iterator: return *v.arr;
    case Value::Dict: {
      Array keys;
      for (auto& kv : *v.obj) keys.push_back(Value::str(kv.first));
      return keys;
    }
    case Value::String: {
      Array chars;
      for (size_t i = 0, n; i < v.s.size(); i += n) {
        decode_at(v.s, i, &n);
        chars.push_back(Value::str(v.s.substr(i, n)));
      }
      return chars;
    }
    default: fail(std::string("TypeError: '") + type_name(v) + "' object is not iterable");
  }
}

int64_t length(const Value& v) {
  switch (v.kind) {
    case Value::Undefined: return 0;
    case Value::String: return int64_t(code_point_starts(v.s).size());
    case Value::List:
    case Value::Tuple: return int64_t(v.arr->size());
    case Value::Dict:
    case Value::Namespace: return int64_t(v.obj->size());
    default: fail(std::string("TypeError: object of type '") + type_name(v) + "' has no len()");
  }
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind) {
    case Value::String:
      if (item.kind != Value::String) fail("TypeError: 'in <string>' requires string as left operand");
      return container.s.find(item.s) != std::string::npos;
    case Value::List:
    case Value::Tuple:
    case Value::Iterator:
      for (auto& x : *container.arr)
        if (equal(x, item)) return true;
      return false;
    case Value::Dict:
    case Value::Namespace: return item.kind == Value::String && container.find(item.s) != nullptr;
    case Value::Undefined: undefined_error(container);
    default: fail(std::string("TypeError: argument of type '") + type_name(container) + "' is not iterable");
  }
}

// Python's slice indices over n items.
void slice_range(int64_t n, const Value& start, const Value& stop, const Value& step, int64_t* b, int64_t* e, int64_t* st) {
  auto as_int = [](const Value& v, int64_t d) {
    if (v.is_undefined() || v.is_none()) return d;
    if (v.kind != Value::Int && v.kind != Value::Bool) fail("TypeError: slice indices must be integers or None");
    return v.kind == Value::Int ? v.i : int64_t(v.b);
  };
  *st = as_int(step, 1);
  if (*st == 0) fail("ValueError: slice step cannot be zero");
  const int64_t lo = *st > 0 ? 0 : -1, hi = *st > 0 ? n : n - 1;
  auto clamp = [&](int64_t x, int64_t d) {
    if (x == INT64_MIN) return d;
    if (x < 0) x += n;
    return std::clamp(x, lo, hi);
  };
  *b = clamp(as_int(start, INT64_MIN), *st > 0 ? 0 : n - 1);
  *e = clamp(as_int(stop, INT64_MIN), *st > 0 ? n : -1);
}

Value do_slice(const Value& v, const Value& start, const Value& stop, const Value& step) {
  if (v.is_undefined()) undefined_error(v);
  if (v.kind == Value::String) {
    const std::vector<size_t> at = code_point_starts(v.s);
    int64_t b, e, st;
    slice_range(int64_t(at.size()), start, stop, step, &b, &e, &st);
    std::string out;
    for (int64_t k = b; st > 0 ? k < e : k > e; k += st) {
      const size_t from = at[size_t(k)], to = size_t(k) + 1 < at.size() ? at[size_t(k) + 1] : v.s.size();
      out += v.s.substr(from, to - from);
    }
    return Value::str(out);
  }
  if (!v.is_seq()) fail(std::string("TypeError: '") + type_name(v) + "' object is not subscriptable");
  int64_t b, e, st;
  slice_range(int64_t(v.arr->size()), start, stop, step, &b, &e, &st);
  Array out;
  for (int64_t k = b; st > 0 ? k < e : k > e; k += st) out.push_back((*v.arr)[size_t(k)]);
  return Value::list(std::move(out), v.kind == Value::Tuple);
}

// ---- arithmetic ----

int64_t exact_int(const Value& v) { return v.kind == Value::Int ? v.i : v.kind == Value::Bool ? int64_t(v.b) : 0; }

// A float as an integer, as Python's int() truncates it; beyond 64 bits (or not finite) an error.
int64_t float_to_int(double d) {
  if (!(d > -9.2e18 && d < 9.2e18)) fail("OverflowError: cannot convert float " + py_float(d) + " to a 64-bit integer");
  return int64_t(d);
}

Value arith(const std::string& op, const Value& a, const Value& b) {
  if (a.is_undefined()) undefined_error(a);
  if (b.is_undefined()) undefined_error(b);
  if (op == "+") {
    if (a.kind == Value::String && b.kind == Value::String) return Value::str(a.s + b.s);
    if (a.is_seq() && b.is_seq()) {
      Array out = *a.arr;
      out.insert(out.end(), b.arr->begin(), b.arr->end());
      return Value::list(std::move(out), a.kind == Value::Tuple);
    }
  }
  if (op == "*") {
    const Value* seq = a.kind == Value::String || a.is_seq() ? &a : b.kind == Value::String || b.is_seq() ? &b : nullptr;
    const Value* cnt = seq == &a ? &b : &a;
    if (seq && (cnt->kind == Value::Int || cnt->kind == Value::Bool)) {
      const int64_t n = std::max<int64_t>(0, cnt->kind == Value::Int ? cnt->i : cnt->b);
      const int64_t unit = int64_t(seq->kind == Value::String ? seq->s.size() : seq->arr->size());
      if (unit > 0 && n > (int64_t(1) << 26) / unit) fail("MemoryError: repetition too large");
      if (seq->kind == Value::String) {
        std::string out;
        for (int64_t k = 0; k < n; ++k) out += seq->s;
        return Value::str(out);
      }
      Array out;
      for (int64_t k = 0; k < n; ++k) out.insert(out.end(), seq->arr->begin(), seq->arr->end());
      return Value::list(std::move(out), seq->kind == Value::Tuple);
    }
  }
  if (!a.is_number() || !b.is_number())
    fail("TypeError: unsupported operand type(s) for " + op + ": '" + type_name(a) + "' and '" + type_name(b) + "'");
  const bool ints = a.kind != Value::Float && b.kind != Value::Float;
  const double x = a.num(), y = b.num();
  const int64_t xi = exact_int(a), yi = exact_int(b);
  int64_t r = 0;
  auto overflow = [&]() -> Value { fail("OverflowError: integer " + op + " beyond 64 bits (Python's integers are unbounded; this renderer's are not)"); };
  if (op == "+") return ints ? (__builtin_add_overflow(xi, yi, &r) ? overflow() : Value::integer(r)) : Value::real(x + y);
  if (op == "-") return ints ? (__builtin_sub_overflow(xi, yi, &r) ? overflow() : Value::integer(r)) : Value::real(x - y);
  if (op == "*") return ints ? (__builtin_mul_overflow(xi, yi, &r) ? overflow() : Value::integer(r)) : Value::real(x * y);
  if (op == "/") {
    if (y == 0) fail("ZeroDivisionError: division by zero");
    return Value::real(x / y);
  }
  if (op == "//" || op == "%") {
    if (y == 0) fail("ZeroDivisionError: integer division or modulo by zero");
    if (ints) {
      if (xi == INT64_MIN && yi == -1) overflow();
      int64_t q = xi / yi;
      r = xi % yi;
      if (r != 0 && ((r < 0) != (yi < 0))) --q, r += yi;  // floor, as Python
      return Value::integer(op == "//" ? q : r);
    }
    const double q = std::floor(x / y);
    return op == "//" ? Value::real(q) : Value::real(x - q * y);
  }
  if (op == "**") {
    if (ints && yi >= 0) {
      int64_t acc = 1, base = xi;
      for (int64_t e = yi; e > 0; e >>= 1) {  // by squaring: 2 ** 10**18 ends at once, in an overflow
        if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) overflow();
        if (e > 1 && __builtin_mul_overflow(base, base, &base)) overflow();
      }
      return Value::integer(acc);
    }
    return Value::real(std::pow(x, y));
  }
  fail("unknown operator " + op);
}

// ---------------------------------------------------------------------------------------------------------------
// Expressions

struct Expr {
  enum Kind { Literal, Name, ListLit, TupleLit, DictLit, Attr, Item, Slice, Call, Filter, Test, Not, Neg, Pos, Binary, And, Or,
              Compare, Concat, Cond } kind;
  Value value;                                // Literal
  std::string name;                           // Name, Attr, Filter, Test, Binary/Compare operator
  std::vector<std::unique_ptr<Expr>> kids;    // operands; Call/Filter/Test: [callee/input, positional args...]
  std::vector<std::pair<std::string, std::unique_ptr<Expr>>> kwargs;
  bool negated = false;                       // Test: "is not"
  int line = 0;
  explicit Expr(Kind k, int l) : kind(k), line(l) {}
};
using ExprPtr = std::unique_ptr<Expr>;

// ---- tokens inside {{ }} and {% %} ----

struct Tok {
  enum Kind { Name, Str, Int, Float, Op, End } kind;
  std::string text;
  double f = 0;
  int64_t i = 0;
};

std::vector<Tok> tokenize(const std::string& src, int line) {
  std::vector<Tok> out;
  size_t p = 0;
  auto err = [&](const std::string& m) { fail("line " + std::to_string(line) + ": " + m); };
  while (p < src.size()) {
    const char c = src[p];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++p;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = p;
      while (e < src.size() && (std::isalnum(static_cast<unsigned char>(src[e])) || src[e] == '_')) ++e;
      out.push_back({Tok::Name, src.substr(p, e - p)});
      p = e;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = p;
      bool real = false;
      while (e < src.size() && (std::isdigit(static_cast<unsigned char>(src[e])) || src[e] == '_')) ++e;
      if (e + 1 < src.size() && src[e] == '.' && std::isdigit(static_cast<unsigned char>(src[e + 1]))) {
        real = true;
        ++e;
        while (e < src.size() && std::isdigit(static_cast<unsigned char>(src[e]))) ++e;
      }
      if (e < src.size() && (src[e] == 'e' || src[e] == 'E')) {
        size_t x = e + 1;
        if (x < src.size() && (src[x] == '+' || src[x] == '-')) ++x;
        if (x < src.size() && std::isdigit(static_cast<unsigned char>(src[x]))) {
          real = true;
          e = x;
          while (e < src.size() && std::isdigit(static_cast<unsigned char>(src[e]))) ++e;
        }
      }
      std::string num = src.substr(p, e - p);
      num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
      Tok t{real ? Tok::Float : Tok::Int, num};
      if (real) t.f = std::strtod(num.c_str(), nullptr);
      else t.i = std::strtoll(num.c_str(), nullptr, 10);
      out.push_back(t);
      p = e;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string s;
      size_t e = p + 1;
      for (; e < src.size() && src[e] != c; ++e) {
        if (src[e] != '\\' || e + 1 >= src.size()) {
          s += src[e];
          continue;
        }
        const char x = src[++e];
        switch (x) {
          case 'n': s += '\n'; break;
          case 't': s += '\t'; break;
          case 'r': s += '\r'; break;
          case '0': s += '\0'; break;
          case 'b': s += '\b'; break;
          case 'f': s += '\f'; break;
          case 'v': s += '\v'; break;
          case 'a': s += '\a'; break;
          case '\\': s += '\\'; break;
          case '\'': s += '\''; break;
          case '"': s += '"'; break;
          case '\n': break;
          case 'x':
          case 'u':
          case 'U': {
            const int n = x == 'x' ? 2 : x == 'u' ? 4 : 8;
            if (e + n >= src.size() + 0 && e + n > src.size() - 1 + 1) err("truncated \\" + std::string(1, x) + " escape");
            const uint32_t cp = uint32_t(std::strtoul(src.substr(e + 1, n).c_str(), nullptr, 16));
            e += n;
            append_utf8(s, cp);
            break;
          }
          default: s += '\\', s += x;
        }
      }
      if (e >= src.size()) err("unterminated string");
      out.push_back({Tok::Str, s});
      p = e + 1;
      continue;
    }
    static const char* ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")",
                                "[", "]", "{", "}", ",", ".", ":", "|"};
    bool matched = false;
    for (const char* op : ops) {
      const size_t n = std::strlen(op);
      if (src.compare(p, n, op) == 0) {
        out.push_back({Tok::Op, op});
        p += n;
        matched = true;
        break;
      }
    }
    if (!matched) err(std::string("unexpected character '") + c + "'");
  }
  out.push_back({Tok::End, ""});
  return out;
}

class ExprParser {
 public:
  ExprParser(std::vector<Tok> toks, int line) : t_(std::move(toks)), line_(line) {}
  bool at_end() const { return t_[p_].kind == Tok::End; }
  bool is_op(const char* op) const { return t_[p_].kind == Tok::Op && t_[p_].text == op; }
  bool is_name(const char* n) const { return t_[p_].kind == Tok::Name && t_[p_].text == n; }
  bool accept_op(const char* op) {
    if (!is_op(op)) return false;
    ++p_;
    return true;
  }
  bool accept_name(const char* n) {
    if (!is_name(n)) return false;
    ++p_;
    return true;
  }
  void expect_op(const char* op) {
    if (!accept_op(op)) err(std::string("expected '") + op + "', got '" + t_[p_].text + "'");
  }
  std::string expect_name() {
    if (t_[p_].kind != Tok::Name) err("expected a name, got '" + t_[p_].text + "'");
    return t_[p_++].text;
  }
  void expect_end() {
    if (!at_end()) err("unexpected '" + t_[p_].text + "'");
  }
  [[noreturn]] void err(const std::string& m) const { fail("line " + std::to_string(line_) + ": " + m); }

  // A tuple without parentheses where Jinja allows one (for targets' iterables, set values, output).
  ExprPtr tuple_or_expr() {
    ExprPtr first = expr();
    if (!is_op(",")) return first;
    auto t = make(Expr::TupleLit);
    t->kids.push_back(std::move(first));
    while (accept_op(",")) {
      if (at_end() || is_op(")") || is_name("if")) break;
      t->kids.push_back(expr());
    }
    return t;
  }

  // Nesting (parentheses, unary operators, `not`) and operator chains are bounded: a template is parsed and evaluated
  // by recursion, and "+++…+x" or "((((…" must be an error, not a stack overflow.
  static constexpr int kMaxNesting = 200, kMaxChain = 1000;
  struct Nest {
    ExprParser& p;
    explicit Nest(ExprParser& q) : p(q) {
      if (++p.nesting_ > kMaxNesting) p.err("expression nested more than " + std::to_string(kMaxNesting) + " deep");
    }
    ~Nest() { --p.nesting_; }
  };
  void chain(int& n) {
    if (++n > kMaxChain) err("expression chains more than " + std::to_string(kMaxChain) + " operators");
  }

  ExprPtr expr() {  // a if b else c
    Nest guard(*this);
    ExprPtr e = or_expr();
    while (is_name("if")) {
      ++p_;
      auto c = make(Expr::Cond);
      c->kids.push_back(std::move(e));
      c->kids.push_back(or_expr());
      if (accept_name("else")) c->kids.push_back(expr());
      e = std::move(c);
    }
    return e;
  }

  // expr() without the conditional form (a for loop's iterable stops before its `if` filter).
  ExprPtr or_expr() {
    ExprPtr e = and_expr();
    int n = 0;
    while (accept_name("or")) chain(n), e = binary(Expr::Or, "or", std::move(e), and_expr());
    return e;
  }

 private:
  ExprPtr make(Expr::Kind k) { return std::make_unique<Expr>(k, line_); }
  ExprPtr binary(Expr::Kind k, const std::string& op, ExprPtr a, ExprPtr b) {
    auto e = make(k);
    e->name = op;
    e->kids.push_back(std::move(a));
    e->kids.push_back(std::move(b));
    return e;
  }
  ExprPtr and_expr() {
    ExprPtr e = not_expr();
    int n = 0;
    while (accept_name("and")) chain(n), e = binary(Expr::And, "and", std::move(e), not_expr());
    return e;
  }
  ExprPtr not_expr() {
    Nest guard(*this);
    if (accept_name("not")) {
      auto e = make(Expr::Not);
      e->kids.push_back(not_expr());
      return e;
    }
    return compare();
  }
  ExprPtr compare() {
    ExprPtr e = math1();
    for (int n = 0;; chain(n)) {
      std::string op;
      if (is_op("==") || is_op("!=") || is_op("<") || is_op("<=") || is_op(">") || is_op(">=")) {
        op = t_[p_++].text;
      } else if (is_name("in")) {
        ++p_;
        op = "in";
      } else if (is_name("not") && t_[p_ + 1].kind == Tok::Name && t_[p_ + 1].text == "in") {
        p_ += 2;
        op = "not in";
      } else {
        return e;
      }
      e = binary(Expr::Compare, op, std::move(e), math1());
    }
  }
  ExprPtr math1() {
    ExprPtr e = concat();
    for (int n = 0; is_op("+") || is_op("-"); chain(n)) {
      const std::string op = t_[p_++].text;
      e = binary(Expr::Binary, op, std::move(e), concat());
    }
    return e;
  }
  ExprPtr concat() {
    ExprPtr e = math2();
    int n = 0;
    while (accept_op("~")) chain(n), e = binary(Expr::Concat, "~", std::move(e), math2());
    return e;
  }
  ExprPtr math2() {
    ExprPtr e = power();
    for (int n = 0; is_op("*") || is_op("/") || is_op("//") || is_op("%"); chain(n)) {
      const std::string op = t_[p_++].text;
      e = binary(Expr::Binary, op, std::move(e), power());
    }
    return e;
  }
  ExprPtr power() {
    ExprPtr e = unary(true);
    int n = 0;
    while (accept_op("**")) chain(n), e = binary(Expr::Binary, "**", std::move(e), unary(true));
    return e;
  }
  ExprPtr unary(bool with_filter) {
    Nest guard(*this);
    ExprPtr e;
    if (accept_op("-")) {
      e = make(Expr::Neg);
      e->kids.push_back(unary(false));
    } else if (accept_op("+")) {
      e = make(Expr::Pos);
      e->kids.push_back(unary(false));
    } else {
      e = postfix(primary());
    }
    return with_filter ? filters(std::move(e)) : std::move(e);
  }
  ExprPtr primary() {
    const Tok& t = t_[p_];
    if (t.kind == Tok::Str) {
      std::string s;
      while (t_[p_].kind == Tok::Str) s += t_[p_++].text;  // adjacent literals join, as in Python
      auto e = make(Expr::Literal);
      e->value = Value::str(s);
      return e;
    }
    if (t.kind == Tok::Int || t.kind == Tok::Float) {
      ++p_;
      auto e = make(Expr::Literal);
      e->value = t.kind == Tok::Int ? Value::integer(t.i) : Value::real(t.f);
      return e;
    }
    if (t.kind == Tok::Name) {
      ++p_;
      auto e = make(Expr::Literal);
      if (t.text == "true" || t.text == "True") e->value = Value::boolean(true);
      else if (t.text == "false" || t.text == "False") e->value = Value::boolean(false);
      else if (t.text == "none" || t.text == "None") e->value = Value::none();
      else {
        e->kind = Expr::Name;
        e->name = t.text;
      }
      return e;
    }
    if (accept_op("(")) {
      if (accept_op(")")) return make(Expr::TupleLit);
      ExprPtr e = expr();
      if (is_op(",")) {
        auto tup = make(Expr::TupleLit);
        tup->kids.push_back(std::move(e));
        while (accept_op(",")) {
          if (is_op(")")) break;
          tup->kids.push_back(expr());
        }
        e = std::move(tup);
      }
      expect_op(")");
      return e;
    }
    if (accept_op("[")) {
      auto e = make(Expr::ListLit);
      while (!is_op("]")) {
        e->kids.push_back(expr());
        if (!accept_op(",")) break;
      }
      expect_op("]");
      return e;
    }
    if (accept_op("{")) {
      auto e = make(Expr::DictLit);
      while (!is_op("}")) {
        e->kids.push_back(expr());
        expect_op(":");
        e->kids.push_back(expr());
        if (!accept_op(",")) break;
      }
      expect_op("}");
      return e;
    }
    err("unexpected '" + t.text + "'" + (t.kind == Tok::End ? " (end of the tag)" : ""));
  }
  void call_args(Expr& e) {  // after '('
    while (!is_op(")")) {
      if (t_[p_].kind == Tok::Name && t_[p_ + 1].kind == Tok::Op && t_[p_ + 1].text == "=") {
        std::string k = t_[p_].text;
        p_ += 2;
        e.kwargs.emplace_back(k, expr());
      } else {
        e.kids.push_back(expr());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }
  ExprPtr postfix(ExprPtr e) {
    for (int n = 0;; chain(n)) {
      if (accept_op(".")) {
        auto a = make(Expr::Attr);
        if (t_[p_].kind == Tok::Int) {  // foo.0 = foo[0]
          a->kind = Expr::Item;
          a->kids.push_back(std::move(e));
          auto idx = make(Expr::Literal);
          idx->value = Value::integer(t_[p_++].i);
          a->kids.push_back(std::move(idx));
        } else {
          a->name = expect_name();
          a->kids.push_back(std::move(e));
        }
        e = std::move(a);
      } else if (accept_op("[")) {
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = expr();
          if (k < 2 && accept_op(":")) slice = true;
          else break;
        }
        expect_op("]");
        if (!slice && !parts[0]) err("empty subscript '[]'");
        auto s = make(slice ? Expr::Slice : Expr::Item);
        s->kids.push_back(std::move(e));
        if (slice)
          for (auto& x : parts) s->kids.push_back(std::move(x));  // may be null
        else
          s->kids.push_back(std::move(parts[0]));
        e = std::move(s);
      } else if (accept_op("(")) {
        auto c = make(Expr::Call);
        c->kids.push_back(std::move(e));
        call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }
  ExprPtr filters(ExprPtr e) {
    for (int n = 0;; chain(n)) {
      if (accept_op("|")) {
        auto f = make(Expr::Filter);
        f->name = expect_name();
        while (accept_op(".")) f->name += "." + expect_name();
        f->kids.push_back(std::move(e));
        if (accept_op("(")) call_args(*f);
        e = std::move(f);
      } else if (accept_name("is")) {
        auto t = make(Expr::Test);
        t->negated = accept_name("not");
        t->name = expect_name();
        t->kids.push_back(std::move(e));
        if (accept_op("(")) {
          call_args(*t);
        } else if (!at_end() && (t_[p_].kind == Tok::Str || t_[p_].kind == Tok::Int || t_[p_].kind == Tok::Float ||
                                 (t_[p_].kind == Tok::Name && !is_name("and") && !is_name("or") && !is_name("else") &&
                                  !is_name("if") && !is_name("in") && !is_name("not") && !is_name("is")) || is_op("[") || is_op("{") || is_op("-"))) {
          t->kids.push_back(unary(false));  // one argument without parentheses: `is divisibleby 3`
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  std::vector<Tok> t_;
  size_t p_ = 0;
  int line_;
  int nesting_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// Statements

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum Kind { Text, Output, If, For, Set, SetBlock, Macro, FilterBlock, Break, Continue } kind;
  int line = 0;
  std::string text;                                        // Text; Set/SetBlock/Macro: the name
  std::vector<std::string> targets;                        // For / Set: the names (several: tuple unpacking)
  std::string attr;                                        // Set: `ns.attr = ...`
  ExprPtr expr;                                            // Output, Set value, For iterable, FilterBlock call
  ExprPtr cond;                                            // For: the `if` filter
  std::vector<std::pair<ExprPtr, Body>> branches;          // If: (condition, body)...
  Body body, else_body;                                    // For / SetBlock / Macro / FilterBlock / If's else
  std::vector<std::pair<std::string, ExprPtr>> params;     // Macro: names and defaults (null: none)
};

struct Piece {  // what the template lexer yields
  enum Kind { Text, Var, Block } kind;
  std::string text;
  int line;
};

std::vector<Piece> lex(const std::string& src) {
  std::vector<Piece> out;
  size_t pos = 0;
  int line = 1;
  bool strip_next = false;  // the previous tag ended with '-'
  auto count_lines = [&](size_t from, size_t to) {
    for (size_t k = from; k < to && k < src.size(); ++k) line += src[k] == '\n';
  };
  while (pos <= src.size()) {
    size_t open = pos;
    while (true) {
      open = src.find('{', open);
      if (open == std::string::npos || open + 1 >= src.size()) {
        open = std::string::npos;
        break;
      }
      const char n = src[open + 1];
      if (n == '{' || n == '%' || n == '#') break;
      ++open;
    }
    std::string text = src.substr(pos, open == std::string::npos ? std::string::npos : open - pos);
    if (strip_next) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
      strip_next = false;
    }
    if (open == std::string::npos) {
      if (!text.empty()) out.push_back({Piece::Text, text, line});
      break;
    }
    const char kind = src[open + 1];
    const char sign = open + 2 < src.size() ? src[open + 2] : 0;
    if (sign == '-') {
      size_t e = text.size();
      while (e > 0 && std::isspace(static_cast<unsigned char>(text[e - 1]))) --e;
      text.resize(e);
    } else if (sign != '+' && kind != '{') {
      // lstrip_blocks: spaces and tabs between the line's start and a block or comment tag go.
      const size_t l = text.rfind('\n');
      const size_t from = l == std::string::npos ? 0 : l + 1;
      const bool line_start = l != std::string::npos || pos == 0 || src[pos - 1] == '\n';
      if (line_start && from < text.size() &&
          std::all_of(text.begin() + long(from), text.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); }))
        text.resize(from);
    }
    if (!text.empty()) out.push_back({Piece::Text, text, line});
    count_lines(pos, open);
    const int tag_line = line;
    size_t body = open + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
    size_t close;
    std::string closer = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    if (kind == '#') {
      close = src.find("#}", body);
    } else {  // skip string literals: "}}" inside quotes does not end the tag
      close = std::string::npos;
      char q = 0;
      for (size_t k = body; k + 1 < src.size(); ++k) {
        if (q) {
          if (src[k] == '\\') ++k;
          else if (src[k] == q) q = 0;
        } else if (src[k] == '\'' || src[k] == '"') {
          q = src[k];
        } else if (src[k] == closer[0] && src[k + 1] == closer[1]) {
          close = k;
          break;
        }
      }
    }
    if (close == std::string::npos) fail("line " + std::to_string(tag_line) + ": unclosed '{" + std::string(1, kind) + "'");
    size_t inner_end = close;
    bool trim_after = false, keep_newline = false;
    if (inner_end > body && src[inner_end - 1] == '-') {
      --inner_end;
      trim_after = true;
    } else if (inner_end > body && src[inner_end - 1] == '+' && kind != '{') {
      --inner_end;
      keep_newline = true;
    }
    const std::string inner = src.substr(body, inner_end - body);
    if (kind == '{') out.push_back({Piece::Var, inner, tag_line});
    else if (kind == '%') out.push_back({Piece::Block, inner, tag_line});
    count_lines(open, close + 2);
    pos = close + 2;
    if (trim_after) strip_next = true;
    else if (kind != '{' && !keep_newline && pos < src.size() && src[pos] == '\n') {  // trim_blocks
      ++pos;
      ++line;
    }
  }
  return out;
}

class StmtParser {
 public:
  explicit StmtParser(std::vector<Piece> pieces) : ps_(std::move(pieces)) {}
  Body parse_all() {
    std::string end;
    Body b = parse_body({}, &end);
    if (!end.empty()) fail("line " + std::to_string(ps_[p_ - 1].line) + ": unexpected '" + end + "'");
    return b;
  }

 private:
  static std::string first_word(const std::string& s) {
    size_t b = 0;
    while (b < s.size() && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
    size_t e = b;
    while (e < s.size() && (std::isalnum(static_cast<unsigned char>(s[e])) || s[e] == '_')) ++e;
    return s.substr(b, e - b);
  }
  // Parses nodes until a block tag whose first word is in `ends` (consumed; its word in *end, its expression
  // parser in *rest).
  Body parse_body(const std::set<std::string>& ends, std::string* end, std::unique_ptr<ExprParser>* rest = nullptr) {
    struct Depth {
      int& d;
      explicit Depth(int& x) : d(x) {
        if (++d > 200) fail("blocks nested more than 200 deep");
      }
      ~Depth() { --d; }
    } guard(depth_);
    Body out;
    while (p_ < ps_.size()) {
      const Piece& pc = ps_[p_++];
      if (pc.kind == Piece::Text) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Text;
        n->text = pc.text;
        out.push_back(std::move(n));
        continue;
      }
      ExprParser ep(tokenize(pc.text, pc.line), pc.line);
      if (pc.kind == Piece::Var) {
        auto n = std::make_unique<Node>();
        n->kind = Node::Output;
        n->line = pc.line;
        n->expr = ep.tuple_or_expr();
        ep.expect_end();
        out.push_back(std::move(n));
        continue;
      }
      const std::string word = ep.expect_name();
      if (ends.count(word)) {
        *end = word;
        if (rest) *rest = std::make_unique<ExprParser>(std::move(ep));
        else if (word != "else") ep.expect_end();
        return out;
      }
      out.push_back(statement(word, ep, pc.line));
    }
    if (!ends.empty()) fail("unexpected end of template: a block is not closed (expected one of: " + join(ends) + ")");
    return out;
  }
  static std::string join(const std::set<std::string>& s) {
    std::string r;
    for (auto& x : s) r += (r.empty() ? "" : ", ") + x;
    return r;
  }
  std::unique_ptr<Node> statement(const std::string& word, ExprParser& ep, int line) {
    auto n = std::make_unique<Node>();
    n->line = line;
    std::string end;
    if (word == "if") {
      n->kind = Node::If;
      ExprPtr c = ep.expr();
      ep.expect_end();
      while (true) {
        std::unique_ptr<ExprParser> rest;
        Body b = parse_body({"elif", "else", "endif"}, &end, &rest);
        n->branches.emplace_back(std::move(c), std::move(b));
        if (end == "elif") {
          c = rest->expr();
          rest->expect_end();
          continue;
        }
        if (end == "else") {
          rest->expect_end();
          n->else_body = parse_body({"endif"}, &end);
        } else {
          rest->expect_end();
        }
        break;
      }
    } else if (word == "for") {
      n->kind = Node::For;
      do n->targets.push_back(ep.expect_name());
      while (ep.accept_op(","));
      if (!ep.accept_name("in")) ep.err("expected 'in' in the for loop");
      n->expr = ep.or_expr();
      if (ep.is_op(",")) {  // a tuple of iterables written without parentheses
        auto t = std::make_unique<Expr>(Expr::TupleLit, line);
        t->kids.push_back(std::move(n->expr));
        while (ep.accept_op(",")) t->kids.push_back(ep.or_expr());
        n->expr = std::move(t);
      }
      if (ep.accept_name("if")) n->cond = ep.expr();
      if (ep.accept_name("recursive")) ep.err("recursive for loops are not supported");
      ep.expect_end();
      std::unique_ptr<ExprParser> rest;
      n->body = parse_body({"else", "endfor"}, &end, &rest);
      rest->expect_end();
      if (end == "else") n->else_body = parse_body({"endfor"}, &end);
    } else if (word == "set") {
      std::string name = ep.expect_name();
      if (ep.accept_op(".")) n->attr = ep.expect_name();
      n->targets.push_back(name);
      while (n->attr.empty() && ep.accept_op(",")) n->targets.push_back(ep.expect_name());
      if (ep.accept_op("=")) {
        n->kind = Node::Set;
        n->expr = ep.tuple_or_expr();
        ep.expect_end();
      } else {
        if (n->targets.size() != 1 || !n->attr.empty()) ep.err("a set block assigns one name");
        n->kind = Node::SetBlock;
        if (ep.is_op("|")) ep.err("filters on a set block are not supported");
        ep.expect_end();
        n->body = parse_body({"endset"}, &end);
      }
    } else if (word == "macro") {
      n->kind = Node::Macro;
      n->text = ep.expect_name();
      ep.expect_op("(");
      while (!ep.is_op(")")) {
        std::string p = ep.expect_name();
        ExprPtr d;
        if (ep.accept_op("=")) d = ep.expr();
        n->params.emplace_back(p, std::move(d));
        if (!ep.accept_op(",")) break;
      }
      ep.expect_op(")");
      ep.expect_end();
      n->body = parse_body({"endmacro"}, &end);
    } else if (word == "filter") {
      n->kind = Node::FilterBlock;
      // `{% filter name(args) %}`: kept as a Filter expression over a placeholder input.
      std::string fname = ep.expect_name();
      auto f = std::make_unique<Expr>(Expr::Filter, line);
      f->name = fname;
      f->kids.push_back(nullptr);
      if (ep.accept_op("(")) {
        while (!ep.is_op(")")) {
          f->kids.push_back(ep.expr());
          if (!ep.accept_op(",")) break;
        }
        ep.expect_op(")");
      }
      ep.expect_end();
      n->expr = std::move(f);
      n->body = parse_body({"endfilter"}, &end);
    } else if (word == "break" || word == "continue") {
      n->kind = word == "break" ? Node::Break : Node::Continue;
      ep.expect_end();
    } else {
      ep.err("unknown tag '" + word + "'");
    }
    return n;
  }

  std::vector<Piece> ps_;
  size_t p_ = 0;
  int depth_ = 0;
};

// ---------------------------------------------------------------------------------------------------------------
// Rendering

enum class Flow { Normal, Break, Continue };

struct Frame {
  std::unordered_map<std::string, Value> vars;
};

class Renderer {
 public:
  Renderer(const RenderOptions& opt) : opt_(opt) {}

  void run(const Body& body, const Value& vars) {
    frames_.emplace_back();
    install_globals(frames_.back());
    frames_.emplace_back();
    for (auto& [k, v] : *vars.obj) frames_.back().vars[k] = v;
    exec(body, out_);
  }
  std::string out_;

 private:
  const RenderOptions& opt_;
  std::vector<Frame> frames_;
  int depth_ = 0, eval_depth_ = 0;
  int64_t steps_ = 0;

  Value lookup(const std::string& name) const {
    for (size_t k = frames_.size(); k-- > 0;) {
      auto it = frames_[k].vars.find(name);
      if (it != frames_[k].vars.end()) return it->second;
    }
    return Value::undefined(name);
  }

  void install_globals(Frame& g) {
    g.vars["range"] = Value::callable([](Args& a) {
      int64_t start = 0, stop, step = 1;
      auto as_int = [](const Value& v) {
        if (v.kind != Value::Int && v.kind != Value::Bool) fail("TypeError: range() arguments must be integers");
        return v.kind == Value::Int ? v.i : int64_t(v.b);
      };
      if (a.pos.size() == 1) stop = as_int(a.pos[0]);
      else if (a.pos.size() >= 2) start = as_int(a.pos[0]), stop = as_int(a.pos[1]), step = a.pos.size() > 2 ? as_int(a.pos[2]) : 1;
      else fail("TypeError: range expected at least 1 argument");
      if (step == 0) fail("ValueError: range() arg 3 must not be zero");
      Array out;
      for (int64_t k = start; step > 0 ? k < stop : k > stop;) {
        out.push_back(Value::integer(k));
        if (out.size() > 100000) fail("range too large (over 100,000 items)");
        if (__builtin_add_overflow(k, step, &k)) break;
      }
      return Value::list(std::move(out));
    });
    g.vars["namespace"] = Value::callable([](Args& a) {
      Object o;
      for (auto& v : a.pos) {
        if (!v.is_map()) fail("TypeError: namespace() takes mappings and keyword arguments");
        for (auto& kv : *v.obj) o.push_back(kv);
      }
      for (auto& [k, v] : a.kw) {
        bool found = false;
        for (auto& kv : o)
          if (kv.first == k) kv.second = v, found = true;
        if (!found) o.emplace_back(k, v);
      }
      return Value::dict(std::move(o), /*ns=*/true);
    });
    g.vars["dict"] = Value::callable([](Args& a) {
      Object o;
      for (auto& v : a.pos)
        if (v.is_map())
          for (auto& kv : *v.obj) o.push_back(kv);
      for (auto& kv : a.kw) o.push_back(kv);
      return Value::dict(std::move(o));
    });
    g.vars["raise_exception"] = Value::callable([](Args& a) -> Value { fail("TemplateError: " + py_str(a.get(0, "message"))); });
    g.vars["strftime_now"] = Value::callable([this](Args& a) {
      const std::string fmt = py_str(a.get(0, "format"));
      if (opt_.strftime_now) return Value::str(opt_.strftime_now(fmt));
      std::time_t t = std::time(nullptr);
      std::tm tm{};
      localtime_r(&t, &tm);
      char buf[256];
      const size_t n = std::strftime(buf, sizeof buf, fmt.c_str(), &tm);
      return Value::str(std::string(buf, n));
    });
  }

  // ---- statements ----

  Flow exec(const Body& body, std::string& out) {
    for (const auto& n : body) {
      const Flow f = exec(*n, out);
      if (f != Flow::Normal) return f;
    }
    return Flow::Normal;
  }

  void assign(const std::string& name, Value v) { frames_.back().vars[name] = std::move(v); }

  void step(const std::string& out) {
    if (++steps_ > opt_.max_steps) fail("the template took more than " + std::to_string(opt_.max_steps) + " steps (RenderOptions::max_steps)");
    if (out.size() > opt_.max_output_bytes) fail("the template wrote more than " + std::to_string(opt_.max_output_bytes) + " bytes (RenderOptions::max_output_bytes)");
  }

  Flow exec(const Node& n, std::string& out) {
    step(out);
    switch (n.kind) {
      case Node::Text: out += n.text; return Flow::Normal;
      case Node::Output: out += py_str(eval(*n.expr)); return Flow::Normal;
      case Node::If:
        for (const auto& [c, b] : n.branches)
          if (truthy(eval(*c))) return exec(b, out);
        return exec(n.else_body, out);
      case Node::For: return exec_for(n, out);
      case Node::Set: {
        Value v = eval(*n.expr);
        if (!n.attr.empty()) {
          Value ns = lookup(n.targets[0]);
          if (ns.kind != Value::Namespace) fail("line " + std::to_string(n.line) + ": cannot assign attribute on non-namespace object");
          for (auto& kv : *ns.obj)
            if (kv.first == n.attr) {
              kv.second = v;
              return Flow::Normal;
            }
          ns.obj->emplace_back(n.attr, v);
        } else if (n.targets.size() == 1) {
          assign(n.targets[0], v);
        } else {
          const Array items = iterate(v);
          if (items.size() != n.targets.size()) fail("ValueError: wrong number of values to unpack in set");
          for (size_t k = 0; k < items.size(); ++k) assign(n.targets[k], items[k]);
        }
        return Flow::Normal;
      }
      case Node::SetBlock: {
        std::string s;
        exec(n.body, s);
        assign(n.targets[0], Value::str(s));
        return Flow::Normal;
      }
      case Node::Macro: assign(n.text, make_macro(n)); return Flow::Normal;
      case Node::FilterBlock: {
        std::string s;
        exec(n.body, s);
        out += py_str(apply_filter(*n.expr, Value::str(s)));
        return Flow::Normal;
      }
      case Node::Break: return Flow::Break;
      case Node::Continue: return Flow::Continue;
    }
    return Flow::Normal;
  }

  Flow exec_for(const Node& n, std::string& out) {
    Array items = iterate(eval(*n.expr));
    auto bind = [&](Frame& f, const Value& item) {
      if (n.targets.size() == 1) {
        f.vars[n.targets[0]] = item;
        return;
      }
      const Array parts = iterate(item);
      if (parts.size() != n.targets.size())
        fail("line " + std::to_string(n.line) + ": ValueError: cannot unpack " + std::to_string(parts.size()) + " values into " + std::to_string(n.targets.size()));
      for (size_t k = 0; k < parts.size(); ++k) f.vars[n.targets[k]] = parts[k];
    };
    if (n.cond) {  // `for x in xs if cond`: the loop (and loop.length) sees only the items that pass
      Array kept;
      for (auto& it : items) {
        frames_.emplace_back();
        bind(frames_.back(), it);
        const bool keep = truthy(eval(*n.cond));
        frames_.pop_back();
        if (keep) kept.push_back(it);
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec(n.else_body, out);
    const int64_t len = int64_t(items.size());
    for (int64_t k = 0; k < len; ++k) {
      step(out);
      frames_.emplace_back();
      Frame& f = frames_.back();
      bind(f, items[size_t(k)]);
      Object loop = {{"index", Value::integer(k + 1)}, {"index0", Value::integer(k)}, {"revindex", Value::integer(len - k)},
                     {"revindex0", Value::integer(len - k - 1)}, {"first", Value::boolean(k == 0)}, {"last", Value::boolean(k == len - 1)},
                     {"length", Value::integer(len)}, {"depth", Value::integer(1)}, {"depth0", Value::integer(0)},
                     {"previtem", k > 0 ? items[size_t(k - 1)] : Value::undefined("loop.previtem")},
                     {"nextitem", k + 1 < len ? items[size_t(k + 1)] : Value::undefined("loop.nextitem")}};
      loop.emplace_back("cycle", Value::callable([k](Args& a) -> Value {
        if (a.pos.empty()) fail("TypeError: no items for cycling given");
        return a.pos[size_t(k) % a.pos.size()];
      }));
      f.vars["loop"] = Value::dict(std::move(loop));
      const Flow fl = exec(n.body, out);
      frames_.pop_back();
      if (fl == Flow::Break) break;
    }
    return Flow::Normal;
  }

  Value make_macro(const Node& n) {
    const Node* node = &n;
    return Value::callable([this, node](Args& a) {
      if (++depth_ > 200) fail("RecursionError: macros nested too deeply");
      // A macro sees the template's globals and top-level variables, its own arguments, nothing of its caller's loops.
      std::vector<Frame> saved(frames_.begin() + 2, frames_.end());
      frames_.resize(2);
      frames_.emplace_back();
      Frame& f = frames_.back();
      for (size_t k = 0; k < node->params.size(); ++k) {
        const auto& [name, dflt] = node->params[k];
        Value v = a.get(k, name.c_str());
        if (!a.has(k, name.c_str())) v = dflt ? eval(*dflt) : Value::undefined(name);
        f.vars[name] = v;
      }
      std::string s;
      try {
        exec(node->body, s);
      } catch (...) {
        frames_.resize(2);
        frames_.insert(frames_.end(), saved.begin(), saved.end());
        --depth_;
        throw;
      }
      frames_.resize(2);
      frames_.insert(frames_.end(), saved.begin(), saved.end());
      --depth_;
      return Value::str(s);
    });
  }

  // ---- expressions ----

  Value get_attr(const Value& obj, const std::string& name) {
    if (obj.is_undefined()) fail("UndefinedError: " + (obj.s.empty() ? std::string("an undefined value") : "'" + obj.s + "'") + " has no attribute '" + name + "'");
    if (obj.kind == Value::Dict || obj.kind == Value::Namespace) {
      if (obj.kind == Value::Dict) {
        Value m = method(obj, name);
        if (!m.is_undefined()) return m;
      }
      if (const Value* v = obj.find(name)) return *v;
      return Value::undefined(name);
    }
    Value m = method(obj, name);
    if (!m.is_undefined()) return m;
    return Value::undefined(name);
  }

  Value get_item(const Value& obj, const Value& key) {
    if (obj.is_undefined()) fail("UndefinedError: " + (obj.s.empty() ? std::string("an undefined value") : "'" + obj.s + "'") + " has no item " + py_repr(key));
    if (obj.is_map()) {
      if (key.kind == Value::String) {
        if (const Value* v = obj.find(key.s)) return *v;
        if (obj.kind == Value::Dict) {
          Value m = method(obj, key.s);
          if (!m.is_undefined()) return m;
        }
        return Value::undefined(key.s);
      }
      return Value::undefined();
    }
    if ((obj.is_seq() || obj.kind == Value::String) && (key.kind == Value::Int || key.kind == Value::Bool)) {
      const int64_t n = length(obj);
      int64_t k = key.kind == Value::Int ? key.i : int64_t(key.b);
      if (k < 0) k += n;
      if (k < 0 || k >= n) return Value::undefined("index " + std::to_string(key.i));
      if (obj.kind == Value::String) return do_slice(obj, Value::integer(k), Value::integer(k + 1), Value::none());
      return (*obj.arr)[size_t(k)];
    }
    if (key.kind == Value::String) return get_attr(obj, key.s);
    return Value::undefined();
  }

  // Python methods that templates call on dicts and strings (bound to `obj`); Undefined if none by that name.
  Value method(const Value& obj, const std::string& name) {
    if (obj.kind == Value::Dict) {
      if (name == "get")
        return Value::callable([obj](Args& a) {
          const Value k = a.get(0, "key");
          const Value* v = k.kind == Value::String ? obj.find(k.s) : nullptr;
          return v ? *v : a.get(1, "default", Value::none());
        });
      if (name == "items" || name == "keys" || name == "values")
        return Value::callable([obj, name](Args&) {
          Array out;
          for (auto& [k, v] : *obj.obj)
            out.push_back(name == "items" ? Value::list({Value::str(k), v}, true) : name == "keys" ? Value::str(k) : v);
          return Value::list(std::move(out));
        });
      if (name == "update" || name == "pop" || name == "setdefault" || name == "clear" || name == "popitem")
        return Value::callable([name](Args&) -> Value { fail("SecurityError: access to attribute '" + name + "' of 'dict' object is unsafe."); });
      return Value::undefined();
    }
    if (obj.is_seq() && (name == "append" || name == "extend" || name == "insert" || name == "pop" || name == "remove" || name == "sort" ||
                         name == "reverse" || name == "clear"))
      return Value::callable([name](Args&) -> Value { fail("SecurityError: access to attribute '" + name + "' of 'list' object is unsafe."); });
    if (obj.kind != Value::String) return Value::undefined();
    const std::string s = obj.s;
    if (name == "strip" || name == "lstrip" || name == "rstrip")
      return Value::callable([s, name](Args& a) { return Value::str(py_strip(s, a.get(0, "chars"), name != "rstrip", name != "lstrip")); });
    if (name == "upper" || name == "lower")
      return Value::callable([s, name](Args&) { return Value::str(name == "upper" ? upper(s) : lower(s)); });
    if (name == "title" || name == "capitalize")
      return Value::callable([s, name](Args&) { return Value::str(name == "title" ? py_title(s) : capitalize(s)); });
    if (name == "startswith" || name == "endswith")
      return Value::callable([s, name](Args& a) {
        const Value p = a.get(0, "prefix");
        Array opts = p.kind == Value::Tuple ? *p.arr : Array{p};
        for (auto& o : opts) {
          if (o.kind != Value::String) fail("TypeError: " + name + " first arg must be str or a tuple of str");
          const bool hit = name == "startswith" ? s.compare(0, o.s.size(), o.s) == 0
                                                : s.size() >= o.s.size() && s.compare(s.size() - o.s.size(), o.s.size(), o.s) == 0;
          if (hit) return Value::boolean(true);
        }
        return Value::boolean(false);
      });
    if (name == "split")
      return Value::callable([s](Args& a) { return split(s, a.get(0, "sep", Value::none()), a.get(1, "maxsplit", Value::integer(-1))); });
    if (name == "replace")
      return Value::callable([s](Args& a) { return Value::str(replace(s, py_str(a.get(0, "old")), py_str(a.get(1, "new")), a.get(2, "count", Value::integer(-1)))); });
    if (name == "format") return Value::callable([](Args&) -> Value { fail("str.format is not supported in templates here"); });
    return Value::undefined();
  }

  static std::string replace(const std::string& s, const std::string& from, const std::string& to, const Value& count) {
    int64_t n = count.kind == Value::Int ? count.i : -1;
    std::string out;
    if (from.empty()) {  // Python inserts `to` between every character
      const auto at = code_point_starts(s);
      for (size_t k = 0; k <= at.size(); ++k) {
        if (n-- != 0) out += to;
        if (k < at.size()) out += s.substr(at[k], (k + 1 < at.size() ? at[k + 1] : s.size()) - at[k]);
      }
      return out;
    }
    size_t p = 0;
    while (n != 0) {
      const size_t hit = s.find(from, p);
      if (hit == std::string::npos) break;
      out += s.substr(p, hit - p) + to;
      p = hit + from.size();
      --n;
    }
    return out + s.substr(p);
  }
  static Value split(const std::string& s, const Value& sep, const Value& maxsplit) {
    int64_t max = maxsplit.kind == Value::Int ? maxsplit.i : -1;
    Array out;
    if (sep.is_none() || sep.is_undefined()) {
      size_t p = 0;
      while (true) {
        while (p < s.size() && std::isspace(static_cast<unsigned char>(s[p]))) ++p;
        if (p >= s.size()) break;
        if (max == 0) {
          size_t e = s.size();
          while (e > p && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
          out.push_back(Value::str(s.substr(p, e - p)));
          break;
        }
        size_t e = p;
        while (e < s.size() && !std::isspace(static_cast<unsigned char>(s[e]))) ++e;
        out.push_back(Value::str(s.substr(p, e - p)));
        p = e;
        --max;
      }
      return Value::list(std::move(out));
    }
    if (sep.kind != Value::String || sep.s.empty()) fail("ValueError: empty separator");
    size_t p = 0;
    while (max != 0) {
      const size_t hit = s.find(sep.s, p);
      if (hit == std::string::npos) break;
      out.push_back(Value::str(s.substr(p, hit - p)));
      p = hit + sep.s.size();
      --max;
    }
    out.push_back(Value::str(s.substr(p)));
    return Value::list(std::move(out));
  }

  Args eval_args(const Expr& e, size_t first) {
    Args a;
    for (size_t k = first; k < e.kids.size(); ++k) a.pos.push_back(eval(*e.kids[k]));
    for (auto& [k, v] : e.kwargs) a.kw.emplace_back(k, eval(*v));
    return a;
  }

  Value eval(const Expr& e) {
    struct Depth {  // (an operator chain's tree is as deep as it is long: bounded here, not by the stack)
      int& d;
      explicit Depth(int& x) : d(x) {
        if (++d > 2000) fail("expression evaluated more than 2000 deep");
      }
      ~Depth() { --d; }
    } guard(eval_depth_);
    switch (e.kind) {
      case Expr::Literal: return e.value;
      case Expr::Name: return lookup(e.name);
      case Expr::ListLit:
      case Expr::TupleLit: {
        Array a;
        for (auto& k : e.kids) a.push_back(eval(*k));
        return Value::list(std::move(a), e.kind == Expr::TupleLit);
      }
      case Expr::DictLit: {
        Object o;
        for (size_t k = 0; k + 1 < e.kids.size(); k += 2) {
          const Value key = eval(*e.kids[k]);
          if (key.kind != Value::String) fail("line " + std::to_string(e.line) + ": dict keys must be strings here");
          Value v = eval(*e.kids[k + 1]);
          bool found = false;
          for (auto& kv : o)
            if (kv.first == key.s) kv.second = v, found = true;
          if (!found) o.emplace_back(key.s, v);
        }
        return Value::dict(std::move(o));
      }
      case Expr::Attr: return get_attr(eval(*e.kids[0]), e.name);
      case Expr::Item: return get_item(eval(*e.kids[0]), eval(*e.kids[1]));
      case Expr::Slice: {
        auto opt = [&](size_t k) { return e.kids[k] ? eval(*e.kids[k]) : Value::none(); };
        return do_slice(eval(*e.kids[0]), opt(1), opt(2), opt(3));
      }
      case Expr::Call: {
        const Value f = eval(*e.kids[0]);
        if (f.kind != Value::Callable) {
          if (f.is_undefined()) undefined_error(f);
          fail(std::string("line ") + std::to_string(e.line) + ": TypeError: '" + type_name(f) + "' object is not callable");
        }
        Args a = eval_args(e, 1);
        return (*f.fn)(a);
      }
      case Expr::Filter: return apply_filter(e, eval(*e.kids[0]));
      case Expr::Test: {
        const bool r = apply_test(e, eval(*e.kids[0]));
        return Value::boolean(e.negated ? !r : r);
      }
      case Expr::Not: return Value::boolean(!truthy(eval(*e.kids[0])));
      case Expr::Neg:
      case Expr::Pos: {
        const Value v = eval(*e.kids[0]);
        if (v.is_undefined()) undefined_error(v);
        if (!v.is_number()) fail(std::string("TypeError: bad operand type for unary -: '") + type_name(v) + "'");
        if (e.kind == Expr::Pos) return v;
        if (v.kind == Value::Float) return Value::real(-v.f);
        if (exact_int(v) == INT64_MIN) fail("OverflowError: integer negation beyond 64 bits");
        return Value::integer(-exact_int(v));
      }
      case Expr::And: {
        Value a = eval(*e.kids[0]);
        return truthy(a) ? eval(*e.kids[1]) : a;
      }
      case Expr::Or: {
        Value a = eval(*e.kids[0]);
        return truthy(a) ? a : eval(*e.kids[1]);
      }
      case Expr::Binary: return arith(e.name, eval(*e.kids[0]), eval(*e.kids[1]));
      case Expr::Concat: return Value::str(py_str(eval(*e.kids[0])) + py_str(eval(*e.kids[1])));
      case Expr::Compare: {
        const Value a = eval(*e.kids[0]), b = eval(*e.kids[1]);
        const std::string& op = e.name;
        if (op == "==") return Value::boolean(equal(a, b));
        if (op == "!=") return Value::boolean(!equal(a, b));
        if (op == "in") return Value::boolean(contains(b, a));
        if (op == "not in") return Value::boolean(!contains(b, a));
        const int c = compare(a, b, op.c_str());
        return Value::boolean(op == "<" ? c < 0 : op == "<=" ? c <= 0 : op == ">" ? c > 0 : c >= 0);
      }
      case Expr::Cond:
        if (truthy(eval(*e.kids[1]))) return eval(*e.kids[0]);
        return e.kids.size() > 2 ? eval(*e.kids[2]) : Value::undefined();
    }
    return Value::undefined();
  }

  // ---- tests (jinja2.tests) ----

  bool test_by_name(const std::string& name, const Value& v, const Args& a, int line) {
    if (name == "defined") return !v.is_undefined();
    if (name == "undefined") return v.is_undefined();
    if (name == "none") return v.is_none();
    if (name == "boolean") return v.kind == Value::Bool;
    if (name == "true") return v.kind == Value::Bool && v.b;
    if (name == "false") return v.kind == Value::Bool && !v.b;
    if (name == "integer") return v.kind == Value::Int;
    if (name == "float") return v.kind == Value::Float;
    if (name == "number") return v.is_number();
    if (name == "string") return v.kind == Value::String;
    if (name == "mapping") return v.kind == Value::Dict;
    if (name == "iterable") return v.kind == Value::String || v.is_seq() || v.kind == Value::Iterator || v.kind == Value::Dict || v.is_undefined();
    if (name == "sequence") return v.kind == Value::String || v.is_seq() || v.kind == Value::Dict;
    if (name == "callable") return v.kind == Value::Callable;
    if (name == "lower") return v.kind == Value::String && lower(v.s) == v.s;
    if (name == "upper") return v.kind == Value::String && upper(v.s) == v.s;
    const Value x = a.get(0, "other");
    if (name == "eq" || name == "equalto" || name == "==") return equal(v, x);
    if (name == "ne" || name == "!=") return !equal(v, x);
    if (name == "lt" || name == "lessthan" || name == "<") return compare(v, x, "<") < 0;
    if (name == "le" || name == "<=") return compare(v, x, "<=") <= 0;
    if (name == "gt" || name == "greaterthan" || name == ">") return compare(v, x, ">") > 0;
    if (name == "ge" || name == ">=") return compare(v, x, ">=") >= 0;
    if (name == "in") return contains(a.get(0, "seq"), v);
    if (name == "sameas") return v.kind == x.kind && (v.is_none() || (v.kind == Value::Bool && v.b == x.b) || equal(v, x));
    if (name == "divisibleby" || name == "even" || name == "odd") {
      if (v.kind != Value::Int) fail("TypeError: '" + name + "' needs an integer");
      if (name == "even") return v.i % 2 == 0;
      if (name == "odd") return v.i % 2 != 0;
      const Value d = a.get(0, "num");
      if (d.kind != Value::Int || d.i == 0) fail("ZeroDivisionError in divisibleby");
      return v.i % d.i == 0;
    }
    fail("line " + std::to_string(line) + ": no test named '" + name + "'");
  }

  bool apply_test(const Expr& e, const Value& v) {
    Args a = eval_args(e, 1);
    return test_by_name(e.name, v, a, e.line);
  }

  // ---- filters (jinja2.filters) ----

  Value apply_filter(const Expr& e, const Value& v) {
    Args a = eval_args(e, 1);
    return filter_by_name(e.name, v, a, e.line);
  }

  // An item's attribute as the filters read it: "a.b" walks, an integer part indexes.
  Value attribute_of(const Value& v, const std::string& path) {
    Value cur = v;
    size_t p = 0;
    while (p <= path.size()) {
      const size_t dot = path.find('.', p);
      const std::string part = path.substr(p, dot == std::string::npos ? std::string::npos : dot - p);
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
      cur = digits && part.size() < 18 ? get_item(cur, Value::integer(std::stoll(part))) : get_item(cur, Value::str(part));
      if (dot == std::string::npos) break;
      p = dot + 1;
    }
    return cur;
  }

  Value filter_by_name(const std::string& name, const Value& v, const Args& a, int line) {
    auto str_of = [&](const Value& x) {
      if (x.is_undefined()) return std::string();
      return py_str(x);
    };
    if (name == "safe" || name == "e" || name == "escape") {
      if (name == "safe") return v.kind == Value::String ? v : Value::str(str_of(v));
      std::string out;
      for (char c : str_of(v)) out += c == '&' ? "&amp;" : c == '<' ? "&lt;" : c == '>' ? "&gt;" : c == '"' ? "&#34;" : c == '\'' ? "&#39;" : std::string(1, c);
      return Value::str(out);
    }
    if (name == "trim") return Value::str(py_strip(str_of(v), a.get(0, "chars"), true, true));
    if (name == "upper") return Value::str(upper(str_of(v)));
    if (name == "lower") return Value::str(lower(str_of(v)));
    if (name == "title") return Value::str(jinja_title(str_of(v)));
    if (name == "capitalize") return Value::str(capitalize(str_of(v)));
    if (name == "string") return Value::str(str_of(v));
    if (name == "replace") return Value::str(replace(str_of(v), py_str(a.get(0, "old")), py_str(a.get(1, "new")), a.get(2, "count", Value::none())));
    if (name == "length" || name == "count") return Value::integer(length(v));
    if (name == "tojson") {
      JsonStyle st;
      const Value ind = a.get(0, "indent", Value::none());
      if (ind.kind == Value::Int) st.indent = int(ind.i);
      if (st.indent >= 0) st.item_sep = ",";
      const Value seps = a.get(2, "separators", Value::none());
      if (seps.is_seq() && seps.arr->size() == 2) st.item_sep = py_str((*seps.arr)[0]), st.key_sep = py_str((*seps.arr)[1]);
      st.sort_keys = truthy(a.get(3, "sort_keys", Value::boolean(false)));
      if (truthy(a.get(1, "ensure_ascii", Value::boolean(false)))) fail("tojson(ensure_ascii=True) is not supported");
      std::string out;
      to_json(v, st, 0, out);
      return Value::str(out);
    }
    if (name == "items") {
      if (v.is_undefined()) return Value::list();
      if (!v.is_map()) fail("line " + std::to_string(line) + ": TypeError: items filter needs a mapping, got " + type_name(v));
      Array out;
      for (auto& [k, x] : *v.obj) out.push_back(Value::list({Value::str(k), x}, true));
      return Value::iterator(std::move(out));
    }
    if (name == "list") return Value::list(iterate(v));
    if (name == "first" || name == "last") {
      Array items = iterate(v);
      if (items.empty()) return Value::undefined("first of an empty sequence");
      return name == "first" ? items.front() : items.back();
    }
    if (name == "join") {
      const std::string sep = a.has(0, "d") ? py_str(a.get(0, "d")) : "";
      const Value attr = a.get(1, "attribute", Value::none());
      std::string out;
      bool firstx = true;
      for (auto& x : iterate(v)) {
        out += (firstx ? "" : sep) + str_of(attr.is_none() ? x : attribute_of(x, py_str(attr)));
        firstx = false;
      }
      return Value::str(out);
    }
    if (name == "default" || name == "d") {
      const bool boolean = truthy(a.get(1, "boolean", Value::boolean(false)));
      if (v.is_undefined() || (boolean && !truthy(v))) return a.get(0, "default_value", Value::str(""));
      return v;
    }
    if (name == "int") {
      if (v.kind == Value::Int) return v;
      if (v.kind == Value::Float) return Value::integer(float_to_int(v.f));
      if (v.kind == Value::Bool) return Value::integer(v.b);
      if (v.kind == Value::String) {
        char* end = nullptr;
        const long long x = std::strtoll(v.s.c_str(), &end, 10);
        if (end != v.s.c_str() && *end == '\0') return Value::integer(x);
        const double d = std::strtod(v.s.c_str(), &end);
        if (end != v.s.c_str() && *end == '\0') return Value::integer(float_to_int(d));
      }
      return a.get(0, "default", Value::integer(0));
    }
    if (name == "float") {
      if (v.is_number()) return Value::real(v.num());
      if (v.kind == Value::String) {
        char* end = nullptr;
        const double d = std::strtod(v.s.c_str(), &end);
        if (end != v.s.c_str() && *end == '\0') return Value::real(d);
      }
      return a.get(0, "default", Value::real(0));
    }
    if (name == "abs") {
      if (!v.is_number()) fail("TypeError: bad operand type for abs()");
      if (v.kind == Value::Float) return Value::real(std::fabs(v.f));
      if (exact_int(v) == INT64_MIN) fail("OverflowError: abs beyond 64 bits");
      return Value::integer(std::llabs(exact_int(v)));
    }
    if (name == "round") {
      const int prec = int(a.get(0, "precision", Value::integer(0)).i);
      const std::string method = py_str(a.get(1, "method", Value::str("common")));
      const double m = std::pow(10.0, prec), x = v.num() * m;
      const double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::round(x);
      return Value::real(r / m);
    }
    if (name == "reverse") {
      if (v.kind == Value::String) {
        const auto at = code_point_starts(v.s);
        std::string out;
        for (size_t k = at.size(); k-- > 0;) out += v.s.substr(at[k], (k + 1 < at.size() ? at[k + 1] : v.s.size()) - at[k]);
        return Value::str(out);
      }
      Array items = iterate(v);
      std::reverse(items.begin(), items.end());
      return Value::iterator(std::move(items));
    }
    if (name == "sort" || name == "dictsort") {
      const bool rev = truthy(a.get(0, "reverse", Value::boolean(false)));
      const bool cs = truthy(a.get(1, "case_sensitive", Value::boolean(false)));
      const Value attr = a.get(2, "attribute", Value::none());
      Array items = name == "dictsort" ? *filter_by_name("items", v, Args{}, line).arr : iterate(v);
      auto key = [&](const Value& x) {
        Value k = name == "dictsort" ? (*x.arr)[0] : attr.is_none() ? x : attribute_of(x, py_str(attr));
        if (!cs && k.kind == Value::String) k.s = lower(k.s);
        return k;
      };
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) { return compare(key(x), key(y), "<") < 0; });
      if (rev) std::reverse(items.begin(), items.end());
      return Value::list(std::move(items));
    }
    if (name == "unique") {
      const bool cs = truthy(a.get(0, "case_sensitive", Value::boolean(false)));
      const Value attr = a.get(1, "attribute", Value::none());
      Array out, seen;
      for (auto& x : iterate(v)) {
        Value k = attr.is_none() ? x : attribute_of(x, py_str(attr));
        if (!cs && k.kind == Value::String) k.s = lower(k.s);
        bool dup = false;
        for (auto& s : seen) dup = dup || equal(s, k);
        if (!dup) seen.push_back(k), out.push_back(x);
      }
      return Value::iterator(std::move(out));
    }
    if (name == "min" || name == "max") {
      Array items = iterate(v);
      if (items.empty()) return Value::undefined("no items");
      Value best = items[0];
      for (auto& x : items)
        if (name == "min" ? compare(x, best, "<") < 0 : compare(x, best, ">") > 0) best = x;
      return best;
    }
    if (name == "sum") {
      const Value attr = a.get(0, "attribute", Value::none());
      Value total = a.get(1, "start", Value::integer(0));
      for (auto& x : iterate(v)) total = arith("+", total, attr.is_none() ? x : attribute_of(x, py_str(attr)));
      return total;
    }
    if (name == "indent") {
      const Value w = a.get(0, "width", Value::integer(4));
      if (w.kind == Value::Int && w.i > 4096) fail("indent width over 4096");
      const std::string ind = w.kind == Value::String ? w.s : std::string(size_t(std::max<int64_t>(0, w.i)), ' ');
      const bool first = truthy(a.get(1, "first", Value::boolean(false))), blank = truthy(a.get(2, "blank", Value::boolean(false)));
      std::string s = str_of(v) + "\n";
      std::vector<std::string> lines;  // str.splitlines
      for (size_t p = 0; p < s.size();) {
        size_t e = p;
        while (e < s.size() && s[e] != '\n' && s[e] != '\r') ++e;
        lines.push_back(s.substr(p, e - p));
        if (e < s.size() && s[e] == '\r' && e + 1 < s.size() && s[e + 1] == '\n') ++e;
        p = e + 1;
      }
      std::string rv;
      if (blank) {
        for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
      } else {
        rv = lines.empty() ? "" : lines[0];
        for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? lines[k] : ind + lines[k]);
      }
      return Value::str(first ? ind + rv : rv);
    }
    if (name == "selectattr" || name == "rejectattr" || name == "select" || name == "reject") {
      const bool attr_form = name == "selectattr" || name == "rejectattr";
      const bool want = name == "selectattr" || name == "select";
      Args rest;
      std::string attr, test;
      size_t k = 0;
      if (attr_form) attr = py_str(a.get(k++, "attribute"));
      if (k < a.pos.size()) test = py_str(a.pos[k++]);
      for (; k < a.pos.size(); ++k) rest.pos.push_back(a.pos[k]);
      Array out;
      if (!truthy(v)) return Value::iterator({});  // jinja2 reads `if seq:` first: none selects nothing
      for (auto& x : iterate(v)) {
        const Value item = attr_form ? attribute_of(x, attr) : x;
        const bool pass = test.empty() ? truthy(item) : test_by_name(test, item, rest, line);
        if (pass == want) out.push_back(x);
      }
      return Value::iterator(std::move(out));
    }
    if (name == "map") {
      Array out;
      if (!truthy(v)) return Value::iterator({});
      bool by_attr = false;
      std::string attr;
      Value dflt = Value::undefined();
      for (auto& [k, x] : a.kw) {
        if (k == "attribute") by_attr = true, attr = py_str(x);
        if (k == "default") dflt = x;
      }
      if (by_attr) {
        for (auto& x : iterate(v)) {
          Value r = attribute_of(x, attr);
          out.push_back(r.is_undefined() && !dflt.is_undefined() ? dflt : r);
        }
        return Value::iterator(std::move(out));
      }
      if (a.pos.empty()) fail("line " + std::to_string(line) + ": map needs a filter name or attribute=");
      const std::string f = py_str(a.pos[0]);
      Args rest;
      rest.pos.assign(a.pos.begin() + 1, a.pos.end());
      for (auto& x : iterate(v)) out.push_back(filter_by_name(f, x, rest, line));
      return Value::iterator(std::move(out));
    }
    if (name == "batch" || name == "slice" || name == "groupby" || name == "attr" || name == "format" || name == "xmlattr" ||
        name == "urlencode" || name == "wordwrap" || name == "truncate" || name == "center" || name == "wordcount" || name == "filesizeformat")
      fail("line " + std::to_string(line) + ": the filter '" + name + "' is not supported by this renderer");
    fail("line " + std::to_string(line) + ": no filter named '" + name + "'");
  }
};

}  // namespace

struct Template::Impl {
  Body body;
};

Template::Template(const std::string& source) : impl_(std::make_unique<Impl>()) {
  // As jinja2's lexer: line ends read as \n, and one newline at the very end is dropped (keep_trailing_newline off).
  std::string src;
  for (size_t k = 0; k < source.size(); ++k) {
    if (source[k] == '\r') {
      src += '\n';
      if (k + 1 < source.size() && source[k + 1] == '\n') ++k;
    } else {
      src += source[k];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();
  StmtParser sp(lex(src));
  impl_->body = sp.parse_all();
}
Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const nlohmann::ordered_json& variables, const RenderOptions& options) const {
  if (!variables.is_object()) throw TemplateError("render: the variables must be a JSON object");
  Renderer r(options);
  try {
    r.run(impl_->body, from_json(variables));
  } catch (const TemplateError&) {
    throw;
  } catch (const std::exception& e) {  // (an allocation beyond what the bounds caught, ...): still the template's failure
    throw TemplateError(std::string("the template failed: ") + e.what());
  }
  return r.out_;
}

}  // namespace frozenlm::jinja
