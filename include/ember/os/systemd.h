// The service manager's side channel (sd_notify through libsystemd): readiness, status,
// watchdog keep-alives, reload and stop. Every call is a no-op when NOTIFY_SOCKET is unset, so
// the daemon runs the same outside systemd. Any thread.
#pragma once

#include <chrono>
#include <optional>
#include <string_view>

namespace ember::os {

class ServiceNotifier {
 public:
  ServiceNotifier();
  bool enabled() const { return enabled_; }
  void ready() const;
  void reloading() const;
  void stopping() const;
  void status(std::string_view text) const;
  void watchdog() const;
  // How often to send watchdog keep-alives: half of WATCHDOG_USEC, when the manager set it
  // for this process.
  std::optional<std::chrono::microseconds> watchdog_interval() const { return watchdog_; }

 private:
  void send(std::string_view state) const;
  bool enabled_ = false;
  std::optional<std::chrono::microseconds> watchdog_;
};

}  // namespace ember::os
