// Errors as values. Every fallible operation below the gateway returns Result<T>; the layer that
// handles an error logs it, the others only pass it up.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ember {

// What kind of failure this is; the gateway maps each kind to one HTTP status.
enum class Errc {
  kInvalid,      // bad input from a user: manifest, bundle, name, query
  kNotFound,     // no such function, version or route
  kConflict,     // the request contradicts current state
  kTooLarge,     // an input is over a configured limit
  kUnsupported,  // a media type or feature Ember does not handle
  kUnavailable,  // temporarily unable (draining, overloaded)
  kSystem,       // the operating system said no; sys_errno says why
};

struct Error {
  Errc code = Errc::kSystem;
  std::string message;  // "operation object: reason"
  int sys_errno = 0;    // errno for kSystem, else 0
  std::string field;    // path of the offending input field, when there is one

  static Error invalid(std::string message, std::string field = {});
  static Error not_found(std::string message);
  static Error too_large(std::string message);
  static Error unsupported(std::string message);
  static Error conflict(std::string message);
  // "operation object: strerror(err)"
  static Error system(std::string_view operation, std::string_view object, int err);
};

// Short machine-readable name of an error code ("invalid", "not_found", ...).
std::string_view errc_name(Errc code);

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT: implicit by design
  Result(Error error) : v_(std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const& { return error_; }
  Error&& error() && { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace ember
