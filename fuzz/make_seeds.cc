// Writes the seed corpora for the fuzz targets: valid safetensors files of every dtype, the edge
// cases the parser must accept (zero-size tensors, padding, metadata), a near miss for each rule
// it enforces, and shard indexes likewise. Usage: fuzz_make_seeds <corpus-dir>; creates
// <corpus-dir>/fuzz_safetensors_header and <corpus-dir>/fuzz_index.
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

std::string le64(uint64_t n) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out;
}

std::string file(const std::string& header, size_t data_len) {
  return le64(header.size()) + header + std::string(data_len, '\x5a');
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

void write(const std::filesystem::path& dir, int& n, const std::string& bytes) {
  std::ofstream out(dir / ("seed-" + std::to_string(n++)), std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <corpus-dir>\n", argv[0]);
    return 2;
  }
  const std::filesystem::path st_dir = std::filesystem::path(argv[1]) / "fuzz_safetensors_header";
  const std::filesystem::path ix_dir = std::filesystem::path(argv[1]) / "fuzz_index";
  std::filesystem::create_directories(st_dir);
  std::filesystem::create_directories(ix_dir);

  int n = 0;
  const std::vector<std::pair<std::string, int>> dtypes = {
      {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F64", 8}, {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U8", 1},  {"BOOL", 1}};
  for (const auto& [name, size] : dtypes) {
    write(st_dir, n, file("{" + entry("w", name, "[2,3]", 0, 6 * size) + "}", 6 * size));
  }
  std::string all = "{\"__metadata__\":{\"format\":\"pt\"}";
  uint64_t off = 0;
  for (const auto& [name, size] : dtypes) {
    all += "," + entry("t." + name, name, "[3]", off, off + 3 * size);
    off += 3 * size;
  }
  all += "," + entry("empty", "F32", "[0,5]", off, off) + "}";
  all.append((8 - all.size() % 8) % 8, ' ');
  write(st_dir, n, file(all, off));
  write(st_dir, n, file("{}      ", 0));
  write(st_dir, n, file("{" + entry("s", "F64", "[]", 0, 8) + "}", 8));
  // Near misses: overlap, gap, trailing bytes, truncation, span mismatch, duplicate key.
  write(st_dir, n,
        file("{" + entry("a", "U8", "[8]", 0, 8) + "," + entry("b", "U8", "[8]", 4, 12) + "}", 12));
  write(st_dir, n,
        file("{" + entry("a", "U8", "[8]", 0, 8) + "," + entry("b", "U8", "[8]", 9, 17) + "}", 17));
  write(st_dir, n, file("{" + entry("a", "U8", "[8]", 0, 8) + "}", 9));
  write(st_dir, n, file("{" + entry("a", "U8", "[8]", 0, 8) + "}", 7));
  write(st_dir, n, file("{" + entry("a", "F32", "[2]", 0, 4) + "}", 4));
  write(st_dir, n,
        file("{" + entry("a", "U8", "[1]", 0, 1) + "," + entry("a", "U8", "[1]", 1, 2) + "}", 2));
  write(st_dir, n,
        file("{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}",
             0));
  write(st_dir, n, le64(~uint64_t{0}) + "{}");

  n = 0;
  write(ix_dir, n,
        "{\"metadata\": {\"total_size\": 12}, \"weight_map\": {\"a\": "
        "\"model-00001-of-00002.safetensors\", \"b\": \"model-00002-of-00002.safetensors\"}}\n");
  write(ix_dir, n, "{\"weight_map\": {\"a\": \"./sub/x.safetensors\"}}");
  write(ix_dir, n, "{\"weight_map\": {\"a\": \"../x.safetensors\"}}");
  write(ix_dir, n, "{\"weight_map\": {\"a\": \"/etc/x\"}}");
  write(ix_dir, n, "{\"weight_map\": {\"a\": \"x\", \"a\": \"y\"}}");
  write(ix_dir, n, "{\"weight_map\": {\"a\": 1}}");
  write(ix_dir, n, "{\"weight_map\": []}");
  std::printf("seeds written under %s\n", argv[1]);
  return 0;
}
