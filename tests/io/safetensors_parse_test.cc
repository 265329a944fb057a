// parse_safetensors_header against hand-built bytes: one test per way a header can be wrong, each
// checking that the message names the file and, where there is one, the tensor and the field.
#include <string>

#include "io/safetensors.h"
#include "io_test_util.h"

namespace mistral {
namespace {

using testing::FailsWith;
using testing::le64;
using testing::st_bytes;

constexpr char kSrc[] = "bad.safetensors";

Result<SafetensorsHeader> parse(const std::string& bytes) {
  return parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                                  kSrc);
}

// {"name":{"dtype":..,"shape":..,"data_offsets":..}} with the pieces spliced in verbatim.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":" + dtype + ",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

Status parse_status(const std::string& header, size_t data_len) {
  return parse(st_bytes(header, data_len)).status();
}

// --- Header length ---

TEST(SafetensorsParse, FewerThanEightBytes) {
  EXPECT_TRUE(FailsWith(parse("abc").status(), {kSrc, "3 bytes", "too short"}));
}

TEST(SafetensorsParse, EmptyBuffer) { EXPECT_TRUE(FailsWith(parse("").status(), {kSrc, "empty"})); }

TEST(SafetensorsParse, HeaderLengthZero) {
  EXPECT_TRUE(FailsWith(parse(le64(0) + "{}").status(), {kSrc, "header length is 0"}));
}

TEST(SafetensorsParse, HeaderLengthPastEndOfFile) {
  EXPECT_TRUE(FailsWith(parse(le64(100) + "{}").status(), {kSrc, "100", "past the end"}));
}

TEST(SafetensorsParse, HeaderLengthOver100MB) {
  const std::string bytes = le64(kMaxSafetensorsHeaderBytes + 1) + "{}";
  EXPECT_TRUE(FailsWith(parse(bytes).status(), {kSrc, "exceeds the limit"}));
}

TEST(SafetensorsParse, HeaderLengthMaxUint64DoesNotOverflow) {
  const std::string bytes = le64(~uint64_t{0}) + std::string(64, ' ');
  EXPECT_TRUE(FailsWith(parse(bytes).status(), {kSrc, "18446744073709551615", "exceeds"}));
  // 2^64 - 8 would wrap 8 + len to 0 in careless code.
  EXPECT_TRUE(FailsWith(parse(le64(~uint64_t{0} - 7) + "{}").status(), {kSrc, "exceeds"}));
}

// --- JSON ---

TEST(SafetensorsParse, NonUtf8) {
  EXPECT_TRUE(FailsWith(parse_status("{\"a\xff\":{}}", 0), {kSrc, "UTF-8", "byte 3"}));
}

TEST(SafetensorsParse, NonUtf8Subtle) {
  // Overlong "/", a UTF-16 surrogate, a code point above U+10FFFF, a truncated sequence.
  for (const std::string bad : {"\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xe2\x82"}) {
    EXPECT_TRUE(FailsWith(parse_status("{\"" + bad + "\":1}", 0), {kSrc, "UTF-8"}));
  }
}

TEST(SafetensorsParse, ValidUtf8NamesAccepted) {
  const std::string name = "poids.\xc3\xa9t\xc3\xa9.\xe6\x9d\x83\xe9\x87\x8d.\xf0\x9f\x98\x80";
  auto h = parse(st_bytes("{" + entry(name, "\"U8\"", "[2]", "[0,2]") + "}", 2));
  ASSERT_TRUE(h.ok()) << h.status().message();
  EXPECT_EQ(h->tensors[0].name, name);
}

TEST(SafetensorsParse, TruncatedJson) {
  EXPECT_TRUE(FailsWith(parse_status("{\"a\":{\"dtype\":\"F32\"", 0), {kSrc, "invalid JSON"}));
}

TEST(SafetensorsParse, MalformedJson) {
  EXPECT_TRUE(FailsWith(parse_status("{\"a\" 1}", 0), {kSrc, "invalid JSON"}));
  EXPECT_TRUE(FailsWith(parse_status("{} {}", 0), {kSrc, "invalid JSON"}));
  EXPECT_TRUE(FailsWith(parse_status("{/*c*/}", 0), {kSrc, "invalid JSON"}));
}

TEST(SafetensorsParse, ByteOrderMark) {
  EXPECT_TRUE(FailsWith(parse_status("\xEF\xBB\xBF{}", 0), {kSrc, "byte-order mark"}));
}

TEST(SafetensorsParse, TopLevelNotObject) {
  EXPECT_TRUE(FailsWith(parse_status("[1, 2]  ", 0), {kSrc, "an array", "expected a JSON object"}));
  EXPECT_TRUE(FailsWith(parse_status("\"x\"", 0), {kSrc, "a string"}));
}

TEST(SafetensorsParse, DuplicateTopLevelKey) {
  const std::string e = entry("w", "\"U8\"", "[0]", "[0,0]");
  EXPECT_TRUE(FailsWith(parse_status("{" + e + "," + e + "}", 0),
                        {kSrc, "duplicate key \"w\"", "top level"}));
}

TEST(SafetensorsParse, DuplicateFieldInEntry) {
  const std::string h =
      "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"F32\",\"shape\":[0],"
      "\"data_offsets\":[0,0]}}";
  EXPECT_TRUE(FailsWith(parse_status(h, 0), {kSrc, "duplicate key \"dtype\"", "in \"w\""}));
}

TEST(SafetensorsParse, DuplicateMetadataKey) {
  const std::string h = "{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}}";
  EXPECT_TRUE(FailsWith(parse_status(h, 0), {kSrc, "duplicate key \"format\"", "__metadata__"}));
}

TEST(SafetensorsParse, NestingTooDeep) {
  std::string deep = "{\"w\":" + std::string(100, '[') + std::string(100, ']') + "}";
  EXPECT_TRUE(FailsWith(parse_status(deep, 0), {kSrc, "nesting deeper"}));
}

// --- Entries ---

TEST(SafetensorsParse, EntryNotObject) {
  EXPECT_TRUE(FailsWith(parse_status("{\"w\": 5}", 0),
                        {kSrc, "tensor \"w\"", "an integer", "expected an object"}));
}

TEST(SafetensorsParse, MissingField) {
  const std::string fields[] = {"\"shape\":[1],\"data_offsets\":[0,1]",
                                "\"dtype\":\"U8\",\"data_offsets\":[0,1]",
                                "\"dtype\":\"U8\",\"shape\":[1]"};
  const char* missing[] = {"'dtype'", "'shape'", "'data_offsets'"};
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(FailsWith(parse_status("{\"w\":{" + fields[i] + "}}", 1),
                          {kSrc, "tensor \"w\"", "missing field", missing[i]}));
  }
}

TEST(SafetensorsParse, ExtraField) {
  const std::string h =
      "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"stride\":[1]}}";
  EXPECT_TRUE(FailsWith(parse_status(h, 1), {kSrc, "tensor \"w\"", "unexpected field \"stride\""}));
}

TEST(SafetensorsParse, UnknownDtype) {
  const std::string h = "{" + entry("w", "\"F8_E4M3\"", "[1]", "[0,1]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 1), {kSrc, "tensor \"w\"", "'dtype'", "\"F8_E4M3\"",
                                             "valid: F32, F16, BF16, F64, I64", "BOOL"}));
  // The spelling is case-sensitive, as in the reference.
  const std::string lower = "{" + entry("w", "\"f32\"", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(lower, 4), {kSrc, "unknown dtype \"f32\""}));
}

TEST(SafetensorsParse, DtypeNotString) {
  const std::string h = "{" + entry("w", "4", "[1]", "[0,4]") + "}";
  EXPECT_TRUE(
      FailsWith(parse_status(h, 4), {kSrc, "tensor \"w\"", "'dtype'", "expected a string"}));
}

TEST(SafetensorsParse, ShapeNotArray) {
  const std::string h = "{" + entry("w", "\"U8\"", "4", "[0,4]") + "}";
  EXPECT_TRUE(
      FailsWith(parse_status(h, 4), {kSrc, "tensor \"w\"", "'shape'", "expected an array"}));
}

TEST(SafetensorsParse, ShapeNegativeDim) {
  const std::string h = "{" + entry("w", "\"U8\"", "[2,-3]", "[0,6]") + "}";
  EXPECT_TRUE(
      FailsWith(parse_status(h, 6), {kSrc, "tensor \"w\"", "'shape'", "dimension 1", "-3"}));
}

TEST(SafetensorsParse, ShapeNonIntegerDim) {
  for (const std::string dim : {"2.5", "2.0", "1e1", "\"2\"", "true", "null", "[2]"}) {
    const std::string h = "{" + entry("w", "\"U8\"", "[" + dim + "]", "[0,2]") + "}";
    EXPECT_TRUE(FailsWith(parse_status(h, 2), {kSrc, "tensor \"w\"", "'shape'", "dimension 0"}))
        << dim;
  }
}

TEST(SafetensorsParse, ShapeDimAboveInt64) {
  const std::string h = "{" + entry("w", "\"U8\"", "[9223372036854775808,0]", "[0,0]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 0), {kSrc, "tensor \"w\"", "'shape'", "2^63"}));
}

TEST(SafetensorsParse, ShapeProductOverflow) {
  const std::string h = "{" + entry("w", "\"U8\"", "[4294967296,4294967296]", "[0,0]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 0), {kSrc, "tensor \"w\"", "'shape'", "overflows"}));
}

TEST(SafetensorsParse, ShapeTimesDtypeSizeOverflow) {
  // 2^62 elements fit in 64 bits; 2^62 x 4 bytes do not.
  const std::string h = "{" + entry("w", "\"F32\"", "[4611686018427387904]", "[0,0]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 0), {kSrc, "tensor \"w\"", "F32", "overflows"}));
}

TEST(SafetensorsParse, DataOffsetsNotTwoNonNegativeIntegers) {
  for (const std::string offsets :
       {"[0]", "[0,1,2]", "[]", "\"0,1\"", "{}", "[-1,0]", "[0,1.0]", "[0,\"1\"]", "null"}) {
    const std::string h = "{" + entry("w", "\"U8\"", "[1]", offsets) + "}";
    EXPECT_TRUE(FailsWith(parse_status(h, 1),
                          {kSrc, "tensor \"w\"", "'data_offsets'", "two non-negative integers"}))
        << offsets;
  }
}

TEST(SafetensorsParse, DataOffsetsBeginAfterEnd) {
  const std::string h = "{" + entry("w", "\"U8\"", "[0]", "[4,0]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 4), {kSrc, "tensor \"w\"", "[4, 0]", "begin > end"}));
}

TEST(SafetensorsParse, SpanDoesNotMatchShape) {
  const std::string h = "{" + entry("w", "\"F32\"", "[2,3]", "[0,20]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 20),
                        {kSrc, "tensor \"w\"", "spans 20 bytes", "[2, 3]", "F32", "needs 24"}));
}

// --- Layout of the data section ---

TEST(SafetensorsParse, OverlappingSpans) {
  const std::string h = "{" + entry("a", "\"U8\"", "[8]", "[0,8]") + "," +
                        entry("b", "\"U8\"", "[8]", "[4,12]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 12), {kSrc, "tensor \"b\"", "overlaps tensor \"a\""}));
}

TEST(SafetensorsParse, IdenticalSpans) {
  const std::string h =
      "{" + entry("a", "\"U8\"", "[8]", "[0,8]") + "," + entry("b", "\"U8\"", "[8]", "[0,8]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 8), {kSrc, "tensor \"b\"", "overlaps tensor \"a\""}));
}

TEST(SafetensorsParse, GapBetweenSpans) {
  const std::string h = "{" + entry("a", "\"U8\"", "[8]", "[0,8]") + "," +
                        entry("b", "\"U8\"", "[8]", "[12,20]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 20), {kSrc, "tensor \"b\"", "gap", "[8, 12)"}));
}

TEST(SafetensorsParse, GapAtStart) {
  const std::string h = "{" + entry("a", "\"U8\"", "[8]", "[4,12]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 12), {kSrc, "tensor \"a\"", "gap", "[0, 4)"}));
}

TEST(SafetensorsParse, DataPastEndOfFile) {
  const std::string h = "{" + entry("a", "\"F32\"", "[4]", "[0,16]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 10),
                        {kSrc, "tensor \"a\"", "past the end of the file", "holds 10 bytes"}));
}

TEST(SafetensorsParse, TrailingBytesAfterLastTensor) {
  const std::string h = "{" + entry("a", "\"U8\"", "[8]", "[0,8]") + "}";
  EXPECT_TRUE(FailsWith(parse_status(h, 12), {kSrc, "4 trailing bytes"}));
  EXPECT_TRUE(FailsWith(parse_status("{}", 1), {kSrc, "1 trailing bytes"}));
}

// --- __metadata__ ---

TEST(SafetensorsParse, MetadataNotObject) {
  for (const std::string value : {"[]", "\"pt\"", "null", "1"}) {
    EXPECT_TRUE(FailsWith(parse_status("{\"__metadata__\":" + value + "}", 0),
                          {kSrc, "'__metadata__'", "expected an object of strings"}))
        << value;
  }
}

TEST(SafetensorsParse, MetadataValueNotString) {
  EXPECT_TRUE(FailsWith(parse_status("{\"__metadata__\":{\"format\":\"pt\",\"step\":3}}", 0),
                        {kSrc, "'__metadata__'", "\"step\"", "an integer"}));
  EXPECT_TRUE(FailsWith(parse_status("{\"__metadata__\":{\"x\":{}}}", 0),
                        {kSrc, "'__metadata__'", "\"x\"", "an object"}));
}

// --- Legal inputs ---

TEST(SafetensorsParse, AcceptsPaddingAndSortsByOffset) {
  // Listed out of order, with a zero-size tensor, header padded with spaces as writers do.
  std::string h = "{\"__metadata__\":{\"format\":\"pt\"}," +
                  entry("b", "\"F16\"", "[2,2]", "[4,12]") + "," +
                  entry("a", "\"I32\"", "[1]", "[0,4]") + "," +
                  entry("empty", "\"F32\"", "[3,0]", "[12,12]") + "}";
  h.append((8 - h.size() % 8) % 8 + 8, ' ');
  auto header = parse(st_bytes(h, 12));
  ASSERT_TRUE(header.ok()) << header.status().message();
  ASSERT_EQ(header->tensors.size(), 3u);
  EXPECT_EQ(header->tensors[0].name, "a");
  EXPECT_EQ(header->tensors[1].name, "b");
  EXPECT_EQ(header->tensors[2].name, "empty");
  EXPECT_EQ(header->tensors[1].dtype, DType::kF16);
  EXPECT_EQ(header->tensors[1].shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(header->tensors[1].num_elements(), 4u);
  EXPECT_EQ(header->tensors[1].num_bytes(), 8u);
  EXPECT_EQ(header->tensors[2].num_bytes(), 0u);
  EXPECT_EQ(header->metadata.at("format"), "pt");
  EXPECT_EQ(header->data_section_offset, 8 + h.size());
}

TEST(SafetensorsParse, ZeroSizeTensorsMayShareAnOffset) {
  const std::string h = "{" + entry("z1", "\"F32\"", "[0]", "[0,0]") + "," +
                        entry("z2", "\"BF16\"", "[0,7]", "[0,0]") + "," +
                        entry("a", "\"U8\"", "[2]", "[0,2]") + "," +
                        entry("z3", "\"I64\"", "[5,0]", "[2,2]") + "}";
  auto header = parse(st_bytes(h, 2));
  ASSERT_TRUE(header.ok()) << header.status().message();
  ASSERT_EQ(header->tensors.size(), 4u);
  EXPECT_EQ(header->tensors[3].name, "z3");
}

TEST(SafetensorsParse, EmptyHeaderAndScalar) {
  EXPECT_TRUE(parse(st_bytes("{}      ", 0)).ok());
  EXPECT_TRUE(parse(st_bytes("{\"__metadata__\":{}}", 0)).ok());
  auto scalar = parse(st_bytes("{" + entry("s", "\"F64\"", "[]", "[0,8]") + "}", 8));
  ASSERT_TRUE(scalar.ok()) << scalar.status().message();
  EXPECT_EQ(scalar->tensors[0].num_elements(), 1u);
}

// --- Files ---

TEST(SafetensorsFileOpen, MissingFile) {
  testing::TempDir dir;
  auto f = SafetensorsFile::open(dir.file("nope.safetensors"));
  EXPECT_TRUE(FailsWith(f.status(), {"nope.safetensors", "No such file or directory"}));
}

TEST(SafetensorsFileOpen, EmptyFile) {
  testing::TempDir dir;
  testing::write_file(dir.file("empty.safetensors"), "");
  auto mapped = MappedFile::open(dir.file("empty.safetensors"));
  ASSERT_TRUE(mapped.ok());
  EXPECT_EQ((*mapped)->size(), 0u);
  auto f = SafetensorsFile::open(dir.file("empty.safetensors"));
  EXPECT_TRUE(FailsWith(f.status(), {"empty.safetensors", "empty (0 bytes)"}));
}

TEST(SafetensorsFileOpen, Directory) {
  testing::TempDir dir;
  EXPECT_TRUE(FailsWith(SafetensorsFile::open(dir.path()).status(), {"not a regular file"}));
}

TEST(SafetensorsFileOpen, ErrorsNameThePath) {
  testing::TempDir dir;
  testing::write_file(dir.file("trunc.safetensors"),
                      st_bytes("{" + entry("w", "\"F32\"", "[4]", "[0,16]") + "}", 8));
  EXPECT_TRUE(FailsWith(SafetensorsFile::open(dir.file("trunc.safetensors")).status(),
                        {dir.file("trunc.safetensors"), "tensor \"w\"", "past the end"}));
}

TEST(SafetensorsFileOpen, FindsTensorsAndData) {
  testing::TempDir dir;
  const std::string bytes = st_bytes(
      "{" + entry("b", "\"U8\"", "[3]", "[2,5]") + "," + entry("a", "\"U8\"", "[2]", "[0,2]") + "}",
      5);
  testing::write_file(dir.file("ok.safetensors"), bytes);
  auto f = SafetensorsFile::open(dir.file("ok.safetensors"));
  ASSERT_TRUE(f.ok()) << f.status().message();
  const TensorInfo* b = (*f)->find("b");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ((*f)->find("c"), nullptr);
  const size_t data_start = bytes.size() - 5;
  EXPECT_EQ(std::string(reinterpret_cast<const char*>((*f)->tensor_data(*b)), 3),
            bytes.substr(data_start + 2, 3));
  EXPECT_EQ((*f)->path(), dir.file("ok.safetensors"));
}

}  // namespace
}  // namespace mistral
