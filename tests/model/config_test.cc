// Tests of model/config: parsing Hugging Face config.json and Mistral params.json objects built
// here, the validation of relations between fields, and the round trip through to_hf_config_json.
#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/config.h"

namespace mistral {
namespace {

using nlohmann::json;

// A small but complete config.json, as save_pretrained writes it.
json hf_base() {
  return json::parse(R"({
    "architectures": ["MistralForCausalLM"], "model_type": "mistral",
    "vocab_size": 1000, "hidden_size": 64, "intermediate_size": 160,
    "num_hidden_layers": 2, "num_attention_heads": 8, "num_key_value_heads": 2,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
    "sliding_window": 512, "tie_word_embeddings": false, "hidden_act": "silu",
    "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16"})");
}

json params_base() {
  return json::parse(R"({"dim": 64, "n_layers": 2, "head_dim": 16, "hidden_dim": 160,
    "n_heads": 4, "n_kv_heads": 2, "norm_eps": 1e-05, "vocab_size": 1000, "rope_theta": 1e6})");
}

// Passes when `r` failed with a message containing every one of `words`.
template <typename T>
::testing::AssertionResult FailsWith(const Result<T>& r, std::vector<std::string_view> words) {
  if (r.ok()) return ::testing::AssertionFailure() << "expected an error, got ok";
  for (std::string_view w : words) {
    if (r.status().message().find(w) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message lacks \"" << w << "\": " << r.status().message();
    }
  }
  return ::testing::AssertionSuccess();
}

Result<ModelConfig> parse_with(const std::string& key, const json& value) {
  json j = hf_base();
  j[key] = value;
  return parse_hf_config(j, "cfg.json");
}

Result<ModelConfig> parse_without(const std::string& key) {
  json j = hf_base();
  j.erase(key);
  return parse_hf_config(j, "cfg.json");
}

void expect_same_config(const ModelConfig& a, const ModelConfig& b) {
  EXPECT_EQ(a.vocab_size, b.vocab_size);
  EXPECT_EQ(a.hidden_size, b.hidden_size);
  EXPECT_EQ(a.intermediate_size, b.intermediate_size);
  EXPECT_EQ(a.num_hidden_layers, b.num_hidden_layers);
  EXPECT_EQ(a.num_attention_heads, b.num_attention_heads);
  EXPECT_EQ(a.num_key_value_heads, b.num_key_value_heads);
  EXPECT_EQ(a.head_dim, b.head_dim);
  EXPECT_EQ(a.max_position_embeddings, b.max_position_embeddings);
  EXPECT_EQ(a.rms_norm_eps, b.rms_norm_eps);  // exact: JSON dumps doubles to round-trip
  EXPECT_EQ(a.rope_theta, b.rope_theta);
  EXPECT_EQ(a.sliding_window, b.sliding_window);
  EXPECT_EQ(a.tie_word_embeddings, b.tie_word_embeddings);
  EXPECT_EQ(a.bos_token_id, b.bos_token_id);
  EXPECT_EQ(a.eos_token_ids, b.eos_token_ids);
  EXPECT_EQ(a.pad_token_id, b.pad_token_id);
  EXPECT_EQ(a.hidden_act, b.hidden_act);
  EXPECT_EQ(a.dtype, b.dtype);
}

TEST(HfConfigTest, ParsesEveryField) {
  Result<ModelConfig> r = parse_hf_config(hf_base(), "cfg.json");
  ASSERT_TRUE(r.ok()) << r.status().message();
  const ModelConfig& c = *r;
  EXPECT_EQ(c.vocab_size, 1000);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 160);
  EXPECT_EQ(c.num_hidden_layers, 2);
  EXPECT_EQ(c.num_attention_heads, 8);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 8);  // derived: 64 / 8
  EXPECT_EQ(c.q_dim(), 64);
  EXPECT_EQ(c.kv_dim(), 16);
  EXPECT_EQ(c.max_position_embeddings, 2048);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.rope_theta, 1e4);
  EXPECT_EQ(c.sliding_window, 512);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{2});
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.dtype, DType::kBF16);
}

TEST(HfConfigTest, MissingRequiredFieldIsNamed) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads"}) {
    EXPECT_TRUE(FailsWith(parse_without(key), {"cfg.json", "missing", key})) << key;
    EXPECT_TRUE(FailsWith(parse_with(key, nullptr), {"cfg.json", key})) << key;
  }
}

TEST(HfConfigTest, OptionalFieldsTakeHfDefaults) {
  json j = hf_base();
  for (const char* key : {"num_key_value_heads", "max_position_embeddings", "rms_norm_eps",
                          "rope_theta", "sliding_window", "tie_word_embeddings", "hidden_act",
                          "bos_token_id", "eos_token_id", "torch_dtype"}) {
    j.erase(key);
  }
  Result<ModelConfig> r = parse_hf_config(j, "cfg.json");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->num_key_value_heads, 8);  // MHA when absent
  EXPECT_EQ(r->max_position_embeddings, 32768);
  EXPECT_EQ(r->rms_norm_eps, 1e-6);
  EXPECT_EQ(r->rope_theta, 1e4);
  EXPECT_FALSE(r->sliding_window.has_value());
  EXPECT_FALSE(r->tie_word_embeddings);
  EXPECT_FALSE(r->bos_token_id.has_value());
  EXPECT_TRUE(r->eos_token_ids.empty());
  EXPECT_EQ(r->dtype, DType::kBF16);
}

TEST(HfConfigTest, WrongTypesNameTheField) {
  const std::vector<std::pair<std::string, json>> cases = {
      {"vocab_size", "1000"},
      {"hidden_size", 64.5},
      {"num_hidden_layers", true},
      {"num_key_value_heads", json::array({2})},
      {"intermediate_size", json::object()},
      {"max_position_embeddings", 1e300},
      {"rms_norm_eps", "1e-5"},
      {"rope_theta", "1e4"},
      {"sliding_window", "4096"},
      {"tie_word_embeddings", "false"},
      {"tie_word_embeddings", 0},
      {"hidden_act", 3},
      {"bos_token_id", 1.5},
      {"eos_token_id", "2"},
      {"eos_token_id", json::array({2, "3"})},
      {"torch_dtype", 16},
      {"torch_dtype", "int8"},
      {"dtype", "float64"},
  };
  for (const auto& [key, value] : cases) {
    EXPECT_TRUE(FailsWith(parse_with(key, value), {"cfg.json", key})) << key << " = " << value;
  }
}

TEST(HfConfigTest, IntegralFloatsAreAcceptedAsIntegers) {
  Result<ModelConfig> r = parse_with("hidden_size", 64.0);
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->hidden_size, 64);
}

TEST(HfConfigTest, RelationsBetweenFieldsAreChecked) {
  // 8 heads over 3 kv heads cannot be grouped.
  EXPECT_TRUE(FailsWith(parse_with("num_key_value_heads", 3),
                        {"num_attention_heads (8)", "num_key_value_heads (3)"}));
  EXPECT_TRUE(FailsWith(parse_with("num_key_value_heads", 0), {"num_key_value_heads"}));
  EXPECT_TRUE(FailsWith(parse_with("head_dim", 7), {"head_dim (7)", "even"}));
  EXPECT_TRUE(FailsWith(parse_with("head_dim", 0), {"head_dim"}));
  for (int v : {0, -5}) {
    EXPECT_TRUE(FailsWith(parse_with("vocab_size", v), {"vocab_size", "positive"}));
    EXPECT_TRUE(FailsWith(parse_with("hidden_size", v), {"hidden_size", "positive"}));
    EXPECT_TRUE(FailsWith(parse_with("num_hidden_layers", v), {"num_hidden_layers"}));
    EXPECT_TRUE(FailsWith(parse_with("intermediate_size", v), {"intermediate_size"}));
    EXPECT_TRUE(FailsWith(parse_with("num_attention_heads", v), {"num_attention_heads"}));
    EXPECT_TRUE(FailsWith(parse_with("max_position_embeddings", v), {"max_position_embeddings"}));
  }
  EXPECT_TRUE(FailsWith(parse_with("rms_norm_eps", 0.0), {"rms_norm_eps"}));
  EXPECT_TRUE(FailsWith(parse_with("rope_theta", -1.0), {"rope_theta"}));
  EXPECT_TRUE(FailsWith(parse_with("vocab_size", int64_t{1} << 40), {"vocab_size", "exceeds"}));
}

TEST(HfConfigTest, AbsurdMaxPositionEmbeddingsIsRejected) {
  EXPECT_TRUE(FailsWith(parse_with("max_position_embeddings", 1e12),
                        {"cfg.json", "max_position_embeddings", "1000000000000"}));
  EXPECT_TRUE(FailsWith(parse_with("max_position_embeddings", int64_t{1000000000000}),
                        {"max_position_embeddings", "absurd"}));
  // Mistral-NeMo's 1,024,000 and the limit itself are fine.
  EXPECT_TRUE(parse_with("max_position_embeddings", 1024000).ok());
  EXPECT_TRUE(parse_with("max_position_embeddings", kMaxPositionEmbeddingsLimit).ok());
  EXPECT_FALSE(parse_with("max_position_embeddings", kMaxPositionEmbeddingsLimit + 1).ok());
}

TEST(HfConfigTest, TokenIdsMustBeInsideTheVocabulary) {
  EXPECT_TRUE(FailsWith(parse_with("eos_token_id", 1000), {"eos_token_id", "1000", "[0, 1000)"}));
  EXPECT_TRUE(parse_with("eos_token_id", 999).ok());
  EXPECT_TRUE(FailsWith(parse_with("eos_token_id", json::array({2, 1000})), {"eos_token_id"}));
  EXPECT_TRUE(FailsWith(parse_with("eos_token_id", -1), {"eos_token_id", "-1"}));
  EXPECT_TRUE(FailsWith(parse_with("bos_token_id", -1), {"bos_token_id"}));
  EXPECT_TRUE(FailsWith(parse_with("bos_token_id", 5000), {"bos_token_id"}));
  EXPECT_TRUE(FailsWith(parse_with("pad_token_id", 1000), {"pad_token_id"}));
  Result<ModelConfig> list = parse_with("eos_token_id", json::array({2, 7, 999}));
  ASSERT_TRUE(list.ok()) << list.status().message();
  EXPECT_EQ(list->eos_token_ids, (std::vector<int64_t>{2, 7, 999}));
  Result<ModelConfig> none = parse_with("eos_token_id", nullptr);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->eos_token_ids.empty());
}

TEST(HfConfigTest, RopeThetaLocations) {
  json top = hf_base();
  top["rope_theta"] = 1e6;
  top["rope_scaling"] = nullptr;
  ASSERT_TRUE(parse_hf_config(top, "c").ok());
  EXPECT_EQ(parse_hf_config(top, "c")->rope_theta, 1e6);

  json params = hf_base();  // transformers 5: rope_parameters, no top-level rope_theta
  params.erase("rope_theta");
  params["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  Result<ModelConfig> p = parse_hf_config(params, "c");
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_EQ(p->rope_theta, 1e6);

  params["rope_theta"] = 1e4;  // the nested value wins over a stale top-level one
  EXPECT_EQ(parse_hf_config(params, "c")->rope_theta, 1e6);

  json scaling = hf_base();
  scaling["rope_scaling"] = {{"type", "default"}, {"rope_theta", 5e5}};
  ASSERT_TRUE(parse_hf_config(scaling, "c").ok());
  EXPECT_EQ(parse_hf_config(scaling, "c")->rope_theta, 5e5);

  json untyped = hf_base();  // rope_type absent means default; theta absent falls back
  untyped["rope_parameters"] = json::object();
  untyped["rope_theta"] = 2e5;
  ASSERT_TRUE(parse_hf_config(untyped, "c").ok());
  EXPECT_EQ(parse_hf_config(untyped, "c")->rope_theta, 2e5);

  for (const char* key : {"rope_parameters", "rope_scaling"}) {
    json yarn = hf_base();
    yarn[key] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 1e6}};
    EXPECT_TRUE(FailsWith(parse_hf_config(yarn, "c"), {key, "yarn", "not supported"}));
    json linear = hf_base();
    linear[key] = {{"type", "linear"}, {"factor", 2.0}};
    EXPECT_TRUE(FailsWith(parse_hf_config(linear, "c"), {key, "linear"}));
    json bad = hf_base();
    bad[key] = "default";
    EXPECT_TRUE(FailsWith(parse_hf_config(bad, "c"), {key, "object"}));
    json bad_theta = hf_base();
    bad_theta[key] = {{"rope_type", "default"}, {"rope_theta", "big"}};
    EXPECT_TRUE(FailsWith(parse_hf_config(bad_theta, "c"), {key, "rope_theta"}));
  }
}

TEST(HfConfigTest, SlidingWindow) {
  Result<ModelConfig> null_window = parse_with("sliding_window", nullptr);
  ASSERT_TRUE(null_window.ok());
  EXPECT_FALSE(null_window->sliding_window.has_value());
  Result<ModelConfig> w = parse_with("sliding_window", 4096);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w->sliding_window, 4096);
  EXPECT_TRUE(FailsWith(parse_with("sliding_window", 0), {"sliding_window", "positive or null"}));
  EXPECT_TRUE(FailsWith(parse_with("sliding_window", -3), {"sliding_window"}));
}

TEST(HfConfigTest, TiedEmbeddingsHeadDimAndDtype) {
  Result<ModelConfig> tied = parse_with("tie_word_embeddings", true);
  ASSERT_TRUE(tied.ok());
  EXPECT_TRUE(tied->tie_word_embeddings);
  ModelConfig untied = *parse_hf_config(hf_base(), "c");
  EXPECT_EQ(untied.num_parameters() - tied->num_parameters(), 1000u * 64u);

  Result<ModelConfig> null_head = parse_with("head_dim", nullptr);  // older transformers
  ASSERT_TRUE(null_head.ok());
  EXPECT_EQ(null_head->head_dim, 8);
  Result<ModelConfig> explicit_head = parse_with("head_dim", 32);  // q_dim 256 != hidden 64
  ASSERT_TRUE(explicit_head.ok());
  EXPECT_EQ(explicit_head->head_dim, 32);
  EXPECT_EQ(explicit_head->q_dim(), 256);
  EXPECT_EQ(explicit_head->kv_dim(), 64);

  EXPECT_EQ(parse_with("torch_dtype", "float32")->dtype, DType::kF32);
  EXPECT_EQ(parse_with("torch_dtype", "float16")->dtype, DType::kF16);
  json both = hf_base();  // transformers >= 4.56 writes `dtype`; it wins over torch_dtype
  both["dtype"] = "float32";
  EXPECT_EQ(parse_hf_config(both, "c")->dtype, DType::kF32);
  json only_new = hf_base();
  only_new.erase("torch_dtype");
  only_new["dtype"] = "float16";
  EXPECT_EQ(parse_hf_config(only_new, "c")->dtype, DType::kF16);
}

TEST(HfConfigTest, OnlyMistralWithSilu) {
  EXPECT_TRUE(FailsWith(parse_with("model_type", "llama"), {"model_type", "llama", "mistral"}));
  EXPECT_TRUE(FailsWith(parse_with("model_type", "mixtral"), {"mixtral"}));
  EXPECT_TRUE(FailsWith(parse_with("hidden_act", "gelu"), {"hidden_act", "gelu", "silu"}));
  EXPECT_TRUE(parse_without("model_type").ok());
  EXPECT_TRUE(FailsWith(parse_hf_config(json::array({1}), "cfg.json"), {"cfg.json", "object"}));
}

// The config.json files that transformers itself wrote for the committed fixtures.
TEST(HfConfigTest, FixtureConfigsReadAsTransformersWroteThem) {
  const std::string dir = MISTRAL_FIXTURES_DIR;
  Result<ModelConfig> gqa = load_config_file(dir + "/gqa/config.json");
  ASSERT_TRUE(gqa.ok()) << gqa.status().message();
  EXPECT_EQ(gqa->rope_theta, 1e4);  // from rope_parameters
  EXPECT_EQ(gqa->num_key_value_heads, 2);
  EXPECT_EQ(gqa->pad_token_id, 0);
  EXPECT_FALSE(gqa->sliding_window.has_value());
  EXPECT_EQ(gqa->dtype, DType::kF32);
  EXPECT_EQ(load_config_file(dir + "/mha/config.json")->eos_token_ids,
            (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(load_config_file(dir + "/sliding_window/config.json")->sliding_window, 5);
  Result<ModelConfig> head = load_config_file(dir + "/head_dim/config.json");
  ASSERT_TRUE(head.ok());
  EXPECT_EQ(head->head_dim, 32);
  EXPECT_EQ(head->rms_norm_eps, 1e-6);
  EXPECT_TRUE(load_config_file(dir + "/tied/config.json")->tie_word_embeddings);
  EXPECT_EQ(load_config_file(dir + "/rope_1e6_toplevel/config.json")->rope_theta, 1e6);
  EXPECT_EQ(load_config_file(dir + "/bf16/config.json")->dtype, DType::kBF16);
  Result<ModelConfig> native = load_config_file(dir + "/native/params.json");
  ASSERT_TRUE(native.ok()) << native.status().message();
  expect_same_config(*native, [&] {
    ModelConfig c = *gqa;  // the same model; params.json carries no token ids but bos/eos
    c.pad_token_id = std::nullopt;
    c.max_position_embeddings = native->max_position_embeddings;
    c.dtype = DType::kBF16;
    return c;
  }());
}

TEST(HfConfigTest, ConfigFileErrorsNameThePath) {
  EXPECT_TRUE(FailsWith(load_config_file("/nonexistent/dir/config.json"),
                        {"/nonexistent/dir/config.json"}));
}

TEST(MistralParamsTest, ParsesWithAndWithoutOptionalFields) {
  Result<ModelConfig> r = parse_mistral_params(params_base(), "params.json");
  ASSERT_TRUE(r.ok()) << r.status().message();
  EXPECT_EQ(r->hidden_size, 64);
  EXPECT_EQ(r->num_hidden_layers, 2);
  EXPECT_EQ(r->num_attention_heads, 4);
  EXPECT_EQ(r->num_key_value_heads, 2);
  EXPECT_EQ(r->head_dim, 16);
  EXPECT_EQ(r->intermediate_size, 160);
  EXPECT_EQ(r->vocab_size, 1000);
  EXPECT_EQ(r->rms_norm_eps, 1e-5);
  EXPECT_EQ(r->rope_theta, 1e6);
  EXPECT_FALSE(r->sliding_window.has_value());
  EXPECT_FALSE(r->tie_word_embeddings);
  EXPECT_EQ(r->bos_token_id, 1);
  EXPECT_EQ(r->eos_token_ids, std::vector<int64_t>{2});

  json j = params_base();
  j.erase("head_dim");
  j.erase("rope_theta");
  j["n_heads"] = 8;
  j["sliding_window"] = 4096;
  Result<ModelConfig> derived = parse_mistral_params(j, "params.json");
  ASSERT_TRUE(derived.ok()) << derived.status().message();
  EXPECT_EQ(derived->head_dim, 8);  // 64 / 8
  EXPECT_EQ(derived->rope_theta, 1e4);
  EXPECT_EQ(derived->sliding_window, 4096);

  for (const char* key : {"dim", "n_layers", "n_heads", "hidden_dim", "vocab_size", "norm_eps"}) {
    json missing = params_base();
    missing.erase(key);
    EXPECT_TRUE(
        FailsWith(parse_mistral_params(missing, "params.json"), {"params.json", "missing", key}))
        << key;
  }
  json bad = params_base();
  bad["n_kv_heads"] = 3;
  EXPECT_TRUE(FailsWith(parse_mistral_params(bad, "params.json"), {"num_key_value_heads (3)"}));
  json moe = params_base();
  moe["moe"] = {{"num_experts", 8}};
  EXPECT_TRUE(FailsWith(parse_mistral_params(moe, "params.json"), {"moe"}));
}

TEST(ValidateConfigTest, DirectChecks) {
  ModelConfig c = *parse_hf_config(hf_base(), "c");
  EXPECT_TRUE(validate_config(c, "x").ok());
  ModelConfig odd = c;
  odd.head_dim = 9;
  EXPECT_NE(validate_config(odd, "x").message().find("head_dim"), std::string::npos);
  ModelConfig act = c;
  act.hidden_act = "relu";
  EXPECT_NE(validate_config(act, "x").message().find("relu"), std::string::npos);
  ModelConfig eos = c;
  eos.eos_token_ids = {2, -4};
  EXPECT_NE(validate_config(eos, "x").message().find("-4"), std::string::npos);
  ModelConfig eps = c;
  eps.rms_norm_eps = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(validate_config(eps, "x").ok());
  EXPECT_EQ(validate_config(eps, "x").message().rfind("x: ", 0), 0u);  // prefixed by the source
}

TEST(HfConfigTest, ToHfConfigJsonRoundTrips) {
  std::vector<ModelConfig> configs = {*parse_hf_config(hf_base(), "c"), *preset_config("7b"),
                                      *preset_config("tiny")};
  ModelConfig odd = configs[0];
  odd.sliding_window = std::nullopt;
  odd.tie_word_embeddings = true;
  odd.eos_token_ids = {2, 32, 999};
  odd.pad_token_id = 0;
  odd.bos_token_id = std::nullopt;
  odd.head_dim = 24;
  odd.rms_norm_eps = 1.2345678901234567e-6;
  odd.rope_theta = 1000000.5;
  odd.dtype = DType::kF32;
  configs.push_back(odd);
  odd.dtype = DType::kF16;
  odd.eos_token_ids.clear();
  configs.push_back(odd);
  for (const ModelConfig& c : configs) {
    const json j = to_hf_config_json(c);
    Result<ModelConfig> back = parse_hf_config(json::parse(j.dump(2)), "round trip");
    ASSERT_TRUE(back.ok()) << back.status().message() << "\n" << j.dump(2);
    expect_same_config(c, *back);
    EXPECT_EQ(j["model_type"], "mistral");
  }
}

TEST(PresetTest, SevenBHasSevenPointTwoFourBillionParameters) {
  Result<ModelConfig> c = preset_config("7b");
  ASSERT_TRUE(c.ok());
  EXPECT_NEAR(static_cast<double>(c->num_parameters()), 7.24e9, 0.01e9);
  EXPECT_EQ(c->sliding_window, 4096);
  EXPECT_TRUE(validate_config(*c, "7b").ok());
  Result<ModelConfig> tiny = preset_config("tiny");
  ASSERT_TRUE(tiny.ok());
  EXPECT_TRUE(validate_config(*tiny, "tiny").ok());
  EXPECT_TRUE(FailsWith(preset_config("nonsense"), {"nonsense"}));
}

}  // namespace
}  // namespace mistral
