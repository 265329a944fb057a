// Status and Result<T>: how user-caused errors travel (ARCHITECTURE.md rule 6).
// A Status is either ok or carries a message that names the file, field, tensor or parameter at
// fault. Result<T> holds a value or a non-ok Status. Both are cheap value types, not thread-safe
// for concurrent mutation.
#pragma once

#include <optional>
#include <string>
#include <utility>

#include "core/check.h"

namespace mistral {

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok_status() { return Status(); }
  static Status error(std::string message) { return Status(std::move(message), true); }

  bool ok() const { return !failed_; }
  const std::string& message() const { return message_; }

  // Prefixes the message with context, e.g. the file being read: "model/config.json: ...".
  Status with_context(const std::string& context) const {
    if (ok()) return *this;
    return Status::error(context + ": " + message_);
  }

 private:
  Status(std::string message, bool failed) : message_(std::move(message)), failed_(failed) {}
  std::string message_;
  bool failed_ = false;
};

inline Status error(std::string message) { return Status::error(std::move(message)); }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    MISTRAL_CHECK(!status_.ok()) << "Result built from an ok Status without a value";
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & {
    MISTRAL_CHECK(ok()) << "value() of failed Result: " << status_.message();
    return *value_;
  }
  const T& value() const& {
    MISTRAL_CHECK(ok()) << "value() of failed Result: " << status_.message();
    return *value_;
  }
  T&& value() && {
    MISTRAL_CHECK(ok()) << "value() of failed Result: " << status_.message();
    return std::move(*value_);
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace mistral

// Returns early from the enclosing function when `expr` yields a non-ok Status.
#define MISTRAL_RETURN_IF_ERROR(expr) \
  do {                                \
    ::mistral::Status _st = (expr);   \
    if (!_st.ok()) return _st;        \
  } while (0)

#define MISTRAL_CONCAT_INNER(a, b) a##b
#define MISTRAL_CONCAT(a, b) MISTRAL_CONCAT_INNER(a, b)

// `MISTRAL_ASSIGN_OR_RETURN(auto x, make_x());` declares x from a Result or returns its Status.
#define MISTRAL_ASSIGN_OR_RETURN(lhs, expr) \
  MISTRAL_ASSIGN_OR_RETURN_IMPL(MISTRAL_CONCAT(_result_, __LINE__), lhs, expr)
#define MISTRAL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return tmp.status();                 \
  lhs = std::move(tmp).value()
