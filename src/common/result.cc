#include "ember/common/result.h"

#include <cstring>

namespace ember {

Error Error::invalid(std::string message, std::string field) {
  return Error{Errc::kInvalid, std::move(message), 0, std::move(field)};
}
Error Error::not_found(std::string message) { return Error{Errc::kNotFound, std::move(message)}; }
Error Error::too_large(std::string message) { return Error{Errc::kTooLarge, std::move(message)}; }
Error Error::unsupported(std::string message) {
  return Error{Errc::kUnsupported, std::move(message)};
}
Error Error::conflict(std::string message) { return Error{Errc::kConflict, std::move(message)}; }

Error Error::system(std::string_view operation, std::string_view object, int err) {
  std::string msg;
  msg.reserve(operation.size() + object.size() + 64);
  msg.append(operation);
  if (!object.empty()) {
    msg.append(" ");
    msg.append(object);
  }
  msg.append(": ");
  msg.append(std::strerror(err));
  return Error{Errc::kSystem, std::move(msg), err};
}

std::string_view errc_name(Errc code) {
  switch (code) {
    case Errc::kInvalid:
      return "invalid";
    case Errc::kNotFound:
      return "not_found";
    case Errc::kConflict:
      return "conflict";
    case Errc::kTooLarge:
      return "too_large";
    case Errc::kUnsupported:
      return "unsupported";
    case Errc::kUnavailable:
      return "unavailable";
    case Errc::kSystem:
      return "internal";
  }
  return "internal";
}

}  // namespace ember
