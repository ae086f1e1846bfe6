#include "ember/events/store.h"

#include <future>
#include <nlohmann/json.hpp>

#include "ember/common/json_fields.h"

namespace ember::events {

using nlohmann::json;

std::string_view state_name(State state) {
  switch (state) {
    case State::kQueued:
      return "queued";
    case State::kRunning:
      return "running";
    case State::kSucceeded:
      return "succeeded";
    case State::kFailed:
      return "failed";
    case State::kDead:
      return "dead";
  }
  return "queued";
}

std::optional<State> parse_state(std::string_view name) {
  for (State s :
       {State::kQueued, State::kRunning, State::kSucceeded, State::kFailed, State::kDead}) {
    if (state_name(s) == name) return s;
  }
  return std::nullopt;
}

json Event::to_json() const {
  json j{{"id", id},
         {"function", function},
         {"status", state_name(state)},
         {"attempts", attempts},
         {"max_retries", max_retries},
         {"source", source},
         {"created_ms", created_ms},
         {"updated_ms", updated_ms}};
  if (!qualifier.empty()) j["qualifier"] = qualifier;
  if (state == State::kQueued) j["next_attempt_ms"] = next_ms;
  if (!request_id.empty()) j["request_id"] = request_id;
  if (!result.empty()) {
    json value = parse_untrusted(result);
    if (value.is_discarded()) value = result;
    j[state == State::kSucceeded ? "result" : "error"] = std::move(value);
  }
  if (state == State::kFailed) j["sent_to"] = on_failure;
  return j;
}

Status Store::save_now(Event event) {
  std::promise<Status> committed;
  auto done = committed.get_future();
  save(std::move(event), [&committed](Status st) { committed.set_value(std::move(st)); });
  return done.get();
}

}  // namespace ember::events
