// UTF-8 replacement follows Python's bytes.decode("utf-8", "replace"); py_json follows json.dumps.
#include "core/utf8.h"

#include <gtest/gtest.h>

#include "tokenizer/py_json.h"

namespace mistral {
namespace {

const std::string kR = "\xEF\xBF\xBD";

TEST(Utf8, ReplacesMaximalSubpartsLikePython) {
  EXPECT_EQ(utf8::replace_invalid("abc"), "abc");
  EXPECT_EQ(utf8::replace_invalid("\x80"), kR);
  EXPECT_EQ(utf8::replace_invalid("\xE2\x82"), kR);  // truncated: one replacement
  EXPECT_EQ(utf8::replace_invalid("\xE2\x82"
                                  "a"),
            kR + "a");
  EXPECT_EQ(utf8::replace_invalid("\xED\xA0\x80"), kR + kR + kR);  // surrogate
  EXPECT_EQ(utf8::replace_invalid("\xC0\xAF"), kR + kR);           // overlong
  EXPECT_EQ(utf8::replace_invalid("\xF4\x90\x80\x80"), kR + kR + kR + kR);
  EXPECT_EQ(utf8::replace_invalid("\xF0\x9F\x98"), kR);
  EXPECT_EQ(utf8::replace_invalid("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8, IncompleteTail) {
  EXPECT_EQ(utf8::incomplete_tail_length("a\xE2\x82"), 2u);
  EXPECT_EQ(utf8::incomplete_tail_length("a\xE2"), 1u);
  EXPECT_EQ(utf8::incomplete_tail_length("a\xE2\x82\xAC"), 0u);
  EXPECT_EQ(utf8::incomplete_tail_length("a\xC0"), 0u);  // can never complete
  EXPECT_EQ(utf8::incomplete_tail_length("a\x82"), 0u);
}

TEST(PyJson, FloatReprMatchesPython) {
  EXPECT_EQ(py_json::float_repr(1.5), "1.5");
  EXPECT_EQ(py_json::float_repr(3.0), "3.0");
  EXPECT_EQ(py_json::float_repr(-0.0), "-0.0");
  EXPECT_EQ(py_json::float_repr(0.1), "0.1");
  EXPECT_EQ(py_json::float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(py_json::float_repr(1e16), "1e+16");
  EXPECT_EQ(py_json::float_repr(1.5e16), "1.5e+16");
  EXPECT_EQ(py_json::float_repr(0.0001), "0.0001");
  EXPECT_EQ(py_json::float_repr(1e-05), "1e-05");
  EXPECT_EQ(py_json::float_repr(2.5e-05), "2.5e-05");
  EXPECT_EQ(py_json::float_repr(123456789.125), "123456789.125");
  EXPECT_EQ(py_json::float_repr(5e-324), "5e-324");
  EXPECT_EQ(py_json::float_repr(1.7976931348623157e308), "1.7976931348623157e+308");
}

TEST(PyJson, DumpsLikePython) {
  auto v = py_json::loads(
      R"({"b": [1, 2.50, true, null], "a": "é\n\"\u0001", "big": 123456789012345678901234567890, "b": 3})");
  ASSERT_TRUE(v.has_value());
  // Key order kept, duplicate key keeps its first place and last value, big ints verbatim.
  EXPECT_EQ(py_json::dumps(*v),
            "{\"b\": 3, \"a\": \"é\\n\\\"\\u0001\", \"big\": 123456789012345678901234567890}");
  EXPECT_FALSE(py_json::loads("{\"a\": 1,}").has_value());
  EXPECT_FALSE(py_json::loads("not json").has_value());
  EXPECT_EQ(py_json::dumps(*py_json::loads("-0")), "0");
  EXPECT_EQ(py_json::dumps(*py_json::loads("1E5")), "100000.0");
}

}  // namespace
}  // namespace mistral
