#pragma once
// One error convention for what can fail on shard threads (DESIGN.md rule 4):
// `base::Result<T>` = std::expected<T, base::Error>. Exceptions are for start-up and config
// load only. Compilers whose standard library lacks std::expected (clang 14 with libstdc++ 12,
// used for the fuzz builds) get a minimal stand-in with the same spelling for what we use.
// Any thread.
#include <string>
#include <utility>
#include <version>

#if defined(__cpp_lib_expected)
#include <expected>
#endif

namespace ringlb::core::base {

/// Why something failed, in words an operator or a client can act on.
struct Error {
  std::string message;
  int sys_errno = 0;  // errno when a system call failed, else 0
};

#if defined(__cpp_lib_expected)
template <typename T>
using Result = std::expected<T, Error>;
using Unexpected = std::unexpected<Error>;
#else
class Unexpected {
 public:
  explicit Unexpected(Error e) : e_(std::move(e)) {}
  Error& error() { return e_; }

 private:
  Error e_;
};

template <typename T>
class Result {
 public:
  Result(T v) : ok_(true), v_(std::move(v)) {}  // NOLINT: implicit, as std::expected
  Result(Unexpected u) : ok_(false), e_(std::move(u.error())) {}  // NOLINT
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  T& value() { return v_; }
  T& operator*() { return v_; }
  T* operator->() { return &v_; }
  const Error& error() const { return e_; }

 private:
  bool ok_;
  T v_{};
  Error e_;
};

template <>
class Result<void> {
 public:
  Result() : ok_(true) {}
  Result(Unexpected u) : ok_(false), e_(std::move(u.error())) {}  // NOLINT
  bool has_value() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return e_; }

 private:
  bool ok_;
  Error e_;
};
#endif

/// `return base::fail("why");` in a function returning Result<T>.
inline Unexpected fail(std::string message, int sys_errno = 0) {
  return Unexpected(Error{std::move(message), sys_errno});
}

}  // namespace ringlb::core::base
