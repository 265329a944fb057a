// Implementation of byte_pair_encode (a template, so the rank lookup inlines).
#pragma once

#include <limits>
#include <queue>

namespace mistral::tokenizer_internal {

namespace byte_pair_detail {

constexpr int32_t kNone = std::numeric_limits<int32_t>::max();

// O(n^2), as tiktoken does it: fastest for the short pieces that make up nearly all text.
template <typename Lookup>
void merge_small(std::string_view piece, const Lookup& rank, std::vector<int32_t>& out) {
  const size_t n = piece.size();
  // parts[i] = (start offset, rank of the merge of part i with part i+1)
  std::vector<std::pair<size_t, int32_t>> parts;
  parts.reserve(n + 1);
  auto pair_rank = [&](size_t begin, size_t end) {
    const int32_t r = rank(piece.substr(begin, end - begin));
    return r < 0 ? kNone : r;
  };
  for (size_t i = 0; i + 1 < n; ++i) parts.emplace_back(i, pair_rank(i, i + 2));
  parts.emplace_back(n - 1, kNone);
  parts.emplace_back(n, kNone);
  auto get_rank = [&](size_t i) {
    return i + 3 < parts.size() ? pair_rank(parts[i].first, parts[i + 3].first) : kNone;
  };
  while (true) {
    int32_t min_rank = kNone;
    size_t min_i = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      if (parts[i].second < min_rank) {
        min_rank = parts[i].second;
        min_i = i;
      }
    }
    if (min_rank == kNone) break;
    if (min_i > 0) parts[min_i - 1].second = get_rank(min_i - 1);
    parts[min_i].second = get_rank(min_i);
    parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(min_i) + 1);
  }
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    out.push_back(rank(piece.substr(parts[i].first, parts[i + 1].first - parts[i].first)));
  }
}

// O(n log n) with a heap and a linked list, for long pieces (whitespace or symbol runs). Picks
// the same merges: the lowest rank, then the leftmost position.
template <typename Lookup>
void merge_large(std::string_view piece, const Lookup& rank, std::vector<int32_t>& out) {
  const size_t n = piece.size();
  std::vector<size_t> next(n), prev(n);
  std::vector<size_t> end(n);  // end offset of the part starting at i (valid while alive)
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i == 0 ? SIZE_MAX : i - 1;
    end[i] = i + 1;
  }
  using Entry = std::tuple<int32_t, size_t, size_t>;  // rank, left start, right end at push time
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap;
  auto push = [&](size_t left) {
    if (left == SIZE_MAX || next[left] >= n) return;
    const size_t right_end = end[next[left]];
    const int32_t r = rank(piece.substr(left, right_end - left));
    if (r >= 0) heap.emplace(r, left, right_end);
  };
  for (size_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    auto [r, left, right_end] = heap.top();
    heap.pop();
    if (!alive[left] || next[left] >= n || end[next[left]] != right_end) continue;  // stale
    const size_t right = next[left];
    alive[right] = false;
    end[left] = right_end;
    next[left] = next[right];
    if (next[right] < n) prev[next[right]] = left;
    push(prev[left]);
    push(left);
  }
  for (size_t i = 0; i < n; i = next[i]) out.push_back(rank(piece.substr(i, end[i] - i)));
}

}  // namespace byte_pair_detail

template <typename Lookup>
void byte_pair_encode(std::string_view piece, const Lookup& rank, std::vector<int32_t>& out) {
  if (piece.size() == 1) {
    out.push_back(rank(piece));
  } else if (piece.size() <= 128) {
    byte_pair_detail::merge_small(piece, rank, out);
  } else {
    byte_pair_detail::merge_large(piece, rank, out);
  }
}

}  // namespace mistral::tokenizer_internal
