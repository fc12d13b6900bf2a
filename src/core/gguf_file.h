// GGUF, llama.cpp's model file (github.com/ggml-org/ggml docs/gguf.md), version 2 and 3, little-endian:
//   "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv × (string key, u32 value type, value)
//   | n_tensors × (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
//   | padding to general.alignment (default 32) | tensor data (each tensor at data start + offset).
// Strings are u64 length + bytes; arrays are u32 element type + u64 count + elements. ne[0] is the innermost (fastest)
// dimension: a PyTorch [out, in] matrix is ne = [in, out].
//
// The parser is torch-free (the fuzz target runs it alone) and validates everything before any byte is used: every
// count, string length and array length against the bytes that remain (llama.cpp's own reader had CVEs from exactly
// these), known value and tensor types, 1–4 dimensions, element counts without overflow, whole quantisation blocks,
// offsets aligned, inside the file and not overlapping, no duplicate keys or tensor names.
// The writer produces what the parser (and llama.cpp's gguf reader) accepts: version 3, data aligned to 32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace frozenlm {

enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7, STRING = 8, ARRAY = 9,
  UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value. Scalars: `num` (every numeric and bool type, as double) and, for integer types, `integer`
// (exact). Strings: `str`. Arrays: `elem` and either `strs` (strings) or `nums` (numbers/bools); nested arrays are
// refused (no GGUF producer writes them).
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  GgufValueType elem = GgufValueType::UINT8;
  double num = 0;
  int64_t integer = 0;
  bool integer_fits = true;  // false for a UINT64 above INT64_MAX
  std::string str;
  std::vector<std::string> strs;
  std::vector<double> nums;

  bool is_integer() const;
  bool is_array() const { return type == GgufValueType::ARRAY; }
};

// The ggml tensor types: block size (elements) and bytes per block. Only the types the loader reads are
// converted (F32, F16, BF16, Q8_0); the others are known so that a file holding them is parsed and refused by name.
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10, Q3_K = 11, Q4_K = 12,
  Q5_K = 13, Q6_K = 14, Q8_K = 15, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30,
};
struct GgmlTypeInfo {
  const char* name;
  uint32_t block;        // elements per block
  uint32_t block_bytes;  // bytes per block
};
const GgmlTypeInfo* ggml_type_info(uint32_t type);  // nullptr: not a type this reader knows

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> ne;  // ggml order: ne[0] innermost
  GgmlType type = GgmlType::F32;
  uint64_t offset = 0;       // from the start of the data section
  uint64_t nbytes = 0;
  uint64_t numel() const;
};

struct GgufHeader {
  uint32_t version = 0;
  uint32_t alignment = 32;
  uint64_t data_start = 0;   // file offset of the data section
  std::map<std::string, GgufValue> kv;
  std::vector<GgufTensorInfo> tensors;  // in file order

  const GgufValue* find(const std::string& key) const;
  const GgufTensorInfo* tensor(const std::string& name) const;
  // Typed getters: throw frozenlm::Error naming `path`, the key and what is wrong (missing, wrong type, out of range).
  int64_t get_int(const std::string& key, const std::string& path) const;
  int64_t get_int(const std::string& key, int64_t dflt, const std::string& path) const;
  double get_float(const std::string& key, double dflt, const std::string& path) const;
  std::string get_string(const std::string& key, const std::string& path) const;
  bool get_bool(const std::string& key, bool dflt, const std::string& path) const;
};

bool is_gguf_magic(const uint8_t* bytes, size_t n);
bool is_gguf_file(const std::string& path);  // starts with "GGUF"

// Parses the whole file image bytes[0, size). Throws frozenlm::Error naming `path` and the problem.
GgufHeader parse_gguf(const uint8_t* bytes, size_t size, const std::string& path);

// A GGUF file mapped read-only into memory (the tensor data is read in place, not copied whole).
class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  const GgufHeader& header() const { return h_; }
  const std::string& path() const { return path_; }
  const uint8_t* data(const GgufTensorInfo& t) const { return base_ + h_.data_start + t.offset; }
  uint64_t size() const { return size_; }

 private:
  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  GgufHeader h_;
};

// ---- writing ----
class GgufWriter {
 public:
  void add_string(const std::string& key, const std::string& v);
  void add_u32(const std::string& key, uint32_t v);
  void add_i32(const std::string& key, int32_t v);
  void add_f32(const std::string& key, float v);
  void add_bool(const std::string& key, bool v);
  void add_strings(const std::string& key, const std::vector<std::string>& v);
  void add_f32s(const std::string& key, const std::vector<float>& v);
  void add_i32s(const std::string& key, const std::vector<int32_t>& v);
  // ne in ggml order. `fill` produces the tensor's bytes when the file is written (one tensor in memory at a time);
  // it must produce exactly the type's size for ne.
  using Fill = std::function<void(std::vector<uint8_t>& bytes)>;
  void add_tensor(const std::string& name, std::vector<uint64_t> ne, GgmlType type, Fill fill);
  // Writes atomically (temporary file, fsync, rename). Throws frozenlm::Error naming `path`.
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> ne;
    GgmlType type;
    uint64_t nbytes;
    Fill fill;
  };
  void key(const std::string& k, GgufValueType t);
  std::string kv_;  // serialised key/value pairs
  uint64_t n_kv_ = 0;
  std::vector<std::string> keys_;
  std::vector<Tensor> tensors_;
};

}  // namespace frozenlm
