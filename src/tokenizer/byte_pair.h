// tiktoken's byte-pair merge: split a piece into the tokens of a rank table by repeatedly merging
// the adjacent pair whose concatenation has the lowest rank (leftmost on ties). Stateless.
#pragma once

#include <cstdint>
#include <functional>
#include <string_view>
#include <tuple>
#include <vector>

namespace mistral::tokenizer_internal {

// `rank(bytes)` returns the rank of `bytes` or -1 if it is not a token. Appends the ranks of the
// tokens of `piece` (length >= 1; every single byte must have a rank).
template <typename Lookup>
void byte_pair_encode(std::string_view piece, const Lookup& rank, std::vector<int32_t>& out);

}  // namespace mistral::tokenizer_internal

#include "tokenizer/byte_pair_inl.h"
