#include "ember/os/systemd.h"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <string>

namespace ember::os {

ServiceNotifier::ServiceNotifier() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  enabled_ = socket != nullptr && *socket != '\0';
  uint64_t usec = 0;
  // Checks WATCHDOG_PID too: a keep-alive meant for another process is ignored.
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    watchdog_ = std::chrono::microseconds(usec / 2);
  }
}

void ServiceNotifier::send(std::string_view state) const {
  if (!enabled_) return;
  const std::string text(state);
  if (int r = sd_notify(0, text.c_str()); r < 0) {
    spdlog::warn("sd_notify {}: {}", text.substr(0, text.find('=')), std::strerror(-r));
  }
}

void ServiceNotifier::ready() const { send("READY=1"); }
void ServiceNotifier::reloading() const { send("RELOADING=1"); }
void ServiceNotifier::stopping() const { send("STOPPING=1"); }
void ServiceNotifier::status(std::string_view text) const { send("STATUS=" + std::string(text)); }
void ServiceNotifier::watchdog() const { send("WATCHDOG=1"); }

}  // namespace ember::os
