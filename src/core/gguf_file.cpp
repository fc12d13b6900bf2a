// The GGUF parser and writer: no LibTorch here, so that the fuzz target builds it alone.
#include "core/gguf_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/atomic_file.h"
#include "core/error.h"

namespace frozenlm {

namespace {

constexpr uint64_t kMaxKeyBytes = 65535;  // the spec's limit for keys
constexpr uint64_t kMaxNameBytes = 63;    // ggml's GGML_MAX_NAME (64) including the terminating zero
constexpr uint32_t kMaxDims = 4;          // GGML_MAX_DIMS

const GgmlTypeInfo kTypes[] = {
    {"F32", 1, 4},       {"F16", 1, 2},       {"Q4_0", 32, 18},   {"Q4_1", 32, 20},  {nullptr, 0, 0},  {nullptr, 0, 0},
    {"Q5_0", 32, 22},    {"Q5_1", 32, 24},    {"Q8_0", 32, 34},   {"Q8_1", 32, 36},  {"Q2_K", 256, 84}, {"Q3_K", 256, 110},
    {"Q4_K", 256, 144},  {"Q5_K", 256, 176},  {"Q6_K", 256, 210}, {"Q8_K", 256, 292}, {nullptr, 0, 0}, {nullptr, 0, 0},
    {nullptr, 0, 0},     {nullptr, 0, 0},     {nullptr, 0, 0},    {nullptr, 0, 0},   {nullptr, 0, 0},  {nullptr, 0, 0},
    {"I8", 1, 1},        {"I16", 1, 2},       {"I32", 1, 4},      {"I64", 1, 8},     {"F64", 1, 8},    {nullptr, 0, 0},
    {"BF16", 1, 2},
};

// Bytes an element of a fixed-size value type takes (0: a string or array).
size_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    default: return 0;
  }
}

// A cursor over the file image that never reads past its end.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }
  Error fail(const std::string& what) const {
    return Error(path_ + ": invalid GGUF at byte " + std::to_string(pos_) + ": " + what);
  }
  template <class T>
  T get(const char* what) {
    if (left() < sizeof(T)) throw fail(std::string("file ends inside ") + what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what, uint64_t max_len) {
    const uint64_t len = get<uint64_t>(what);
    if (len > left()) throw fail(std::string(what) + " claims " + std::to_string(len) + " bytes, only " + std::to_string(left()) + " remain");
    if (len > max_len) throw fail(std::string(what) + " is " + std::to_string(len) + " bytes (at most " + std::to_string(max_len) + ")");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& path_;
};

bool valid_value_type(uint32_t t) { return t <= uint32_t(GgufValueType::FLOAT64); }

// Reads one scalar of fixed size into v.num / v.integer.
void read_scalar(Reader& r, GgufValueType t, double* num, int64_t* integer, bool* fits) {
  *fits = true;
  switch (t) {
    case GgufValueType::UINT8: *integer = r.get<uint8_t>("a uint8"); break;
    case GgufValueType::INT8: *integer = r.get<int8_t>("an int8"); break;
    case GgufValueType::UINT16: *integer = r.get<uint16_t>("a uint16"); break;
    case GgufValueType::INT16: *integer = r.get<int16_t>("an int16"); break;
    case GgufValueType::UINT32: *integer = r.get<uint32_t>("a uint32"); break;
    case GgufValueType::INT32: *integer = r.get<int32_t>("an int32"); break;
    case GgufValueType::INT64: *integer = r.get<int64_t>("an int64"); break;
    case GgufValueType::BOOL: *integer = r.get<uint8_t>("a bool") != 0; break;
    case GgufValueType::UINT64: {
      const uint64_t u = r.get<uint64_t>("a uint64");
      *fits = u <= uint64_t(std::numeric_limits<int64_t>::max());
      *integer = *fits ? int64_t(u) : 0;
      *num = double(u);
      return;
    }
    case GgufValueType::FLOAT32: *num = r.get<float>("a float32"); return;
    case GgufValueType::FLOAT64: *num = r.get<double>("a float64"); return;
    default: throw r.fail("not a scalar type");
  }
  *num = double(*integer);
}

GgufValue read_value(Reader& r, GgufValueType t, const std::string& key) {
  GgufValue v;
  v.type = t;
  if (t == GgufValueType::STRING) {
    v.str = r.string(("the string value of '" + key + "'").c_str(), std::numeric_limits<uint64_t>::max());
  } else if (t == GgufValueType::ARRAY) {
    const uint32_t et = r.get<uint32_t>("an array's element type");
    if (!valid_value_type(et)) throw r.fail("'" + key + "': unknown array element type " + std::to_string(et));
    v.elem = GgufValueType(et);
    if (v.elem == GgufValueType::ARRAY) throw r.fail("'" + key + "': nested arrays are not supported");
    const uint64_t n = r.get<uint64_t>("an array's length");
    const size_t es = v.elem == GgufValueType::STRING ? 8 : scalar_size(v.elem);  // a string takes ≥ 8 bytes
    if (n > r.left() / es)
      throw r.fail("'" + key + "': array of " + std::to_string(n) + " elements cannot fit in the " + std::to_string(r.left()) + " bytes left");
    if (v.elem == GgufValueType::STRING) {
      v.strs.reserve(n);
      for (uint64_t i = 0; i < n; ++i) v.strs.push_back(r.string(("an element of '" + key + "'").c_str(), std::numeric_limits<uint64_t>::max()));
    } else {
      v.nums.resize(n);
      for (uint64_t i = 0; i < n; ++i) {
        int64_t integer;
        bool fits;
        read_scalar(r, v.elem, &v.nums[i], &integer, &fits);
      }
    }
  } else {
    read_scalar(r, t, &v.num, &v.integer, &v.integer_fits);
  }
  return v;
}

// a · b without overflow past 2^62 (false: too large).
bool mul_ok(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > (uint64_t(1) << 62) / a) return false;
  *out = a * b;
  return true;
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  static const char* names[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                "bool", "string", "array", "uint64", "int64", "float64"};
  return valid_value_type(uint32_t(t)) ? names[uint32_t(t)] : "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::UINT16: case GgufValueType::INT16:
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::UINT64: case GgufValueType::INT64: return true;
    default: return false;
  }
}

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  if (type >= sizeof(kTypes) / sizeof(kTypes[0]) || !kTypes[type].name) return nullptr;
  return &kTypes[type];
}

uint64_t GgufTensorInfo::numel() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  return n;
}

const GgufValue* GgufHeader::find(const std::string& key) const {
  auto it = kv.find(key);
  return it == kv.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufHeader::tensor(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

int64_t GgufHeader::get_int(const std::string& key, const std::string& path) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(path + ": GGUF metadata key '" + key + "' is missing");
  if (!v->is_integer() || !v->integer_fits)
    throw Error(path + ": GGUF metadata '" + key + "' must be an integer, is " + gguf_value_type_name(v->type));
  return v->integer;
}

int64_t GgufHeader::get_int(const std::string& key, int64_t dflt, const std::string& path) const {
  return find(key) ? get_int(key, path) : dflt;
}

double GgufHeader::get_float(const std::string& key, double dflt, const std::string& path) const {
  const GgufValue* v = find(key);
  if (!v) return dflt;
  if (v->is_array() || v->type == GgufValueType::STRING || v->type == GgufValueType::BOOL)
    throw Error(path + ": GGUF metadata '" + key + "' must be a number, is " + gguf_value_type_name(v->type));
  return v->num;
}

std::string GgufHeader::get_string(const std::string& key, const std::string& path) const {
  const GgufValue* v = find(key);
  if (!v) throw Error(path + ": GGUF metadata key '" + key + "' is missing");
  if (v->type != GgufValueType::STRING)
    throw Error(path + ": GGUF metadata '" + key + "' must be a string, is " + gguf_value_type_name(v->type));
  return v->str;
}

bool GgufHeader::get_bool(const std::string& key, bool dflt, const std::string& path) const {
  const GgufValue* v = find(key);
  if (!v) return dflt;
  if (v->type != GgufValueType::BOOL) throw Error(path + ": GGUF metadata '" + key + "' must be a bool, is " + gguf_value_type_name(v->type));
  return v->integer != 0;
}

bool is_gguf_magic(const uint8_t* b, size_t n) { return n >= 4 && b[0] == 'G' && b[1] == 'G' && b[2] == 'U' && b[3] == 'F'; }

bool is_gguf_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return false;
  uint8_t b[4] = {};
  const size_t n = std::fread(b, 1, 4, f);
  std::fclose(f);
  return is_gguf_magic(b, n);
}

GgufHeader parse_gguf(const uint8_t* bytes, size_t size, const std::string& path) {
  Reader r(bytes, size, path);
  if (!is_gguf_magic(bytes, size)) throw Error(path + ": not a GGUF file (it does not start with \"GGUF\")");
  r.get<uint32_t>("the magic");
  GgufHeader h;
  h.version = r.get<uint32_t>("the version");
  if (h.version == 1) throw r.fail("GGUF version 1 (32-bit counts) is not supported: re-convert the model with a current llama.cpp");
  if (h.version != 2 && h.version != 3) {
    const bool swapped = (h.version & 0xffff) == 0 && (h.version >> 16) != 0;
    throw r.fail("unsupported GGUF version " + std::to_string(h.version) + (swapped ? " (a big-endian file?)" : "") + " (2 and 3 are read)");
  }
  const uint64_t n_tensors = r.get<uint64_t>("the tensor count");
  const uint64_t n_kv = r.get<uint64_t>("the metadata count");
  // Each metadata pair needs ≥ 13 bytes (key length, type, a 1-byte value); each tensor info ≥ 24.
  if (n_kv > r.left() / 13) throw r.fail(std::to_string(n_kv) + " metadata pairs cannot fit in the " + std::to_string(r.left()) + " bytes left");
  if (n_tensors > r.left() / 24) throw r.fail(std::to_string(n_tensors) + " tensors cannot fit in the " + std::to_string(r.left()) + " bytes left");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.string("a metadata key", kMaxKeyBytes);
    if (key.empty()) throw r.fail("an empty metadata key");
    if (h.kv.count(key)) throw r.fail("duplicate metadata key '" + key + "'");
    const uint32_t t = r.get<uint32_t>("a value type");
    if (!valid_value_type(t)) throw r.fail("'" + key + "': unknown value type " + std::to_string(t));
    h.kv.emplace(key, read_value(r, GgufValueType(t), key));
  }
  if (const GgufValue* a = h.find("general.alignment")) {
    if (a->type != GgufValueType::UINT32 || a->integer == 0 || (a->integer & (a->integer - 1)) != 0)
      throw Error(path + ": GGUF 'general.alignment' must be a uint32 power of two");
    h.alignment = uint32_t(a->integer);
  }
  h.tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.string("a tensor name", kMaxNameBytes);
    for (const auto& prev : h.tensors)
      if (prev.name == t.name) throw r.fail("duplicate tensor '" + t.name + "'");
    const uint32_t nd = r.get<uint32_t>("a tensor's dimension count");
    if (nd < 1 || nd > kMaxDims) throw r.fail("tensor '" + t.name + "' has " + std::to_string(nd) + " dimensions (1 to 4)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      t.ne.push_back(r.get<uint64_t>("a tensor dimension"));
      if (!mul_ok(numel, t.ne.back(), &numel)) throw r.fail("tensor '" + t.name + "' has too many elements");
    }
    const uint32_t ty = r.get<uint32_t>("a tensor type");
    const GgmlTypeInfo* ti = ggml_type_info(ty);
    if (!ti) throw r.fail("tensor '" + t.name + "' has unknown ggml type " + std::to_string(ty));
    t.type = GgmlType(ty);
    if (t.ne[0] % ti->block != 0)
      throw r.fail("tensor '" + t.name + "': its first dimension " + std::to_string(t.ne[0]) + " is not a whole number of " + ti->name +
                   " blocks of " + std::to_string(ti->block));
    if (!mul_ok(numel / ti->block, ti->block_bytes, &t.nbytes)) throw r.fail("tensor '" + t.name + "' is too large");
    t.offset = r.get<uint64_t>("a tensor offset");
    if (t.offset % h.alignment != 0)
      throw r.fail("tensor '" + t.name + "' offset " + std::to_string(t.offset) + " is not aligned to " + std::to_string(h.alignment));
    h.tensors.push_back(std::move(t));
  }
  const uint64_t end_of_infos = r.pos();
  h.data_start = (end_of_infos + h.alignment - 1) / h.alignment * h.alignment;
  if (!h.tensors.empty() && h.data_start > size)
    throw Error(path + ": invalid GGUF: the file ends (" + std::to_string(size) + " bytes) before its tensor data starts");
  const uint64_t data_size = size > h.data_start ? size - h.data_start : 0;
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& t : h.tensors) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      throw Error(path + ": invalid GGUF: tensor '" + t.name + "' (" + std::to_string(t.nbytes) + " bytes at data offset " +
                  std::to_string(t.offset) + ") runs past the end of the file (" + std::to_string(data_size) + " data bytes): truncated?");
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i - 1]->offset + by_offset[i - 1]->nbytes > by_offset[i]->offset)
      throw Error(path + ": invalid GGUF: tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
  return h;
}

// ---- the mapped file ----

GgufFile::GgufFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  size_ = uint64_t(st.st_size);
  if (size_ == 0) {
    ::close(fd);
    throw Error(path + ": empty file, not a GGUF model");
  }
  void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw Error(path + ": cannot map: " + std::strerror(errno));
  base_ = static_cast<const uint8_t*>(p);
  try {
    h_ = parse_gguf(base_, size_, path);
  } catch (...) {
    ::munmap(const_cast<uint8_t*>(base_), size_);
    throw;
  }
}

GgufFile::~GgufFile() {
  if (base_) ::munmap(const_cast<uint8_t*>(base_), size_);
}

// ---- the writer ----

namespace {
template <class T>
void put(std::string& s, T v) {
  s.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_string(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}
}  // namespace

void GgufWriter::key(const std::string& k, GgufValueType t) {
  if (k.empty() || k.size() > kMaxKeyBytes) throw Error("GGUF writer: bad key '" + k + "'");
  if (std::find(keys_.begin(), keys_.end(), k) != keys_.end()) throw Error("GGUF writer: key '" + k + "' written twice");
  keys_.push_back(k);
  put_string(kv_, k);
  put<uint32_t>(kv_, uint32_t(t));
  ++n_kv_;
}
void GgufWriter::add_string(const std::string& k, const std::string& v) { key(k, GgufValueType::STRING); put_string(kv_, v); }
void GgufWriter::add_u32(const std::string& k, uint32_t v) { key(k, GgufValueType::UINT32); put(kv_, v); }
void GgufWriter::add_i32(const std::string& k, int32_t v) { key(k, GgufValueType::INT32); put(kv_, v); }
void GgufWriter::add_f32(const std::string& k, float v) { key(k, GgufValueType::FLOAT32); put(kv_, v); }
void GgufWriter::add_bool(const std::string& k, bool v) { key(k, GgufValueType::BOOL); put<uint8_t>(kv_, v ? 1 : 0); }
void GgufWriter::add_strings(const std::string& k, const std::vector<std::string>& v) {
  key(k, GgufValueType::ARRAY);
  put<uint32_t>(kv_, uint32_t(GgufValueType::STRING));
  put<uint64_t>(kv_, v.size());
  for (const auto& s : v) put_string(kv_, s);
}
void GgufWriter::add_f32s(const std::string& k, const std::vector<float>& v) {
  key(k, GgufValueType::ARRAY);
  put<uint32_t>(kv_, uint32_t(GgufValueType::FLOAT32));
  put<uint64_t>(kv_, v.size());
  for (float x : v) put(kv_, x);
}
void GgufWriter::add_i32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, GgufValueType::ARRAY);
  put<uint32_t>(kv_, uint32_t(GgufValueType::INT32));
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}

void GgufWriter::add_tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, Fill fill) {
  const GgmlTypeInfo* ti = ggml_type_info(uint32_t(type));
  if (name.empty() || name.size() > kMaxNameBytes) throw Error("GGUF writer: tensor name '" + name + "' is empty or longer than 63 bytes");
  if (!ti || ne.empty() || ne.size() > kMaxDims || ne[0] % ti->block != 0) throw Error("GGUF writer: tensor '" + name + "': bad shape or type");
  for (const auto& t : tensors_)
    if (t.name == name) throw Error("GGUF writer: tensor '" + name + "' written twice");
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;
  tensors_.push_back({name, std::move(ne), type, n / ti->block * ti->block_bytes, std::move(fill)});
}

void GgufWriter::write(const std::string& path) const {
  constexpr uint64_t kAlign = 32;
  auto pad = [&](uint64_t x) { return (x + kAlign - 1) / kAlign * kAlign; };
  std::string head;
  head += "GGUF";
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_);
  head += kv_;
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    put_string(head, t.name);
    put<uint32_t>(head, t.ne.size());
    for (uint64_t d : t.ne) put<uint64_t>(head, d);
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, offset);
    offset = pad(offset + t.nbytes);
  }
  head.resize(pad(head.size()), '\0');

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write: " + std::strerror(errno));
  auto fail = [&](const std::string& what) {
    std::fclose(f);
    std::remove(tmp.c_str());
    return Error(path + ": " + what);
  };
  if (std::fwrite(head.data(), 1, head.size(), f) != head.size()) throw fail("write failed (disk full?)");
  std::vector<uint8_t> bytes;
  static const char zeros[kAlign] = {};
  for (const auto& t : tensors_) {
    bytes.clear();
    t.fill(bytes);
    if (bytes.size() != t.nbytes)
      throw fail("tensor '" + t.name + "' produced " + std::to_string(bytes.size()) + " bytes, its shape needs " + std::to_string(t.nbytes));
    if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) throw fail("write failed (disk full?)");
    const uint64_t padding = pad(t.nbytes) - t.nbytes;
    if (padding && std::fwrite(zeros, 1, padding, f) != padding) throw fail("write failed (disk full?)");
  }
  if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) throw fail("flush failed (disk full?)");
  std::fclose(f);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot rename the written file into place: " + std::strerror(errno));
  }
  const size_t slash = path.rfind('/');
  fsync_path(slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash)));
}

}  // namespace frozenlm
