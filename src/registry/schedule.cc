#include "ember/registry/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <vector>

namespace ember::registry {

namespace {

using namespace std::chrono;

Error bad(std::string_view expression, std::string_view why) {
  return Error::invalid(fmt::format("schedule \"{}\": {}", expression, why), "schedule");
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    const size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

std::optional<int> number(std::string_view s) {
  int v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// A value of a field: a number, or a name ("JAN", "MON") when `names` has it (index + base).
std::optional<int> value(std::string_view s, int base, const std::vector<std::string_view>& names) {
  if (auto n = number(s)) return n;
  std::string upper(s);
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (size_t i = 0; i < names.size(); ++i) {
    if (upper == names[i]) return static_cast<int>(i) + base;
  }
  return std::nullopt;
}

// Reads one field ("*", "5", "1-5", "*/15", "0-30/10", "MON,WED-FRI") into `set` (bit v - 0).
template <size_t N>
Status field(std::string_view expression, std::string_view name, std::string_view text, int min,
             int max, std::bitset<N>& set, int offset = 0,
             const std::vector<std::string_view>& names = {}) {
  for (std::string_view part : split(text, ',')) {
    int step = 1;
    if (size_t slash = part.find('/'); slash != std::string_view::npos) {
      auto s = number(part.substr(slash + 1));
      if (!s || *s < 1) return bad(expression, fmt::format("{}: a step is a number from 1", name));
      step = *s;
      part = part.substr(0, slash);
    }
    int from = min, to = max;
    if (part != "*") {
      const size_t dash = part.find('-');
      auto a = value(part.substr(0, dash), min, names);
      auto b = dash == std::string_view::npos ? a : value(part.substr(dash + 1), min, names);
      if (!a || !b || *a < min || *b > max || *a > *b) {
        return bad(expression, fmt::format("{}: \"{}\" is not a value or range from {} to {}", name,
                                           part, min, max));
      }
      from = *a;
      // "5/15" counts from 5 to the end, as cron does.
      to = (dash == std::string_view::npos && step > 1) ? max : *b;
    }
    for (int v = from; v <= to; v += step) set.set(static_cast<size_t>(v - offset));
  }
  return {};
}

const std::vector<std::string_view> kMonths = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                               "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
const std::vector<std::string_view> kWeekdays = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"};

}  // namespace

Result<Schedule> Schedule::parse(std::string_view expression) {
  Schedule s;
  s.expression_ = std::string(expression);
  auto inside = [&](std::string_view prefix) -> std::optional<std::string_view> {
    if (!expression.starts_with(prefix) || !expression.ends_with(")")) return std::nullopt;
    return expression.substr(prefix.size(), expression.size() - prefix.size() - 1);
  };
  if (auto rate = inside("rate(")) {
    auto parts = split(*rate, ' ');
    auto n = parts.size() == 2 ? number(parts[0]) : std::nullopt;
    if (!n || *n < 1) {
      return bad(expression, "a rate is rate(N UNIT) with N a whole number from 1");
    }
    std::string_view unit = parts[1];
    if (unit.ends_with("s")) unit.remove_suffix(1);
    const int64_t unit_ms = unit == "second"   ? 1'000
                            : unit == "minute" ? 60'000
                            : unit == "hour"   ? 3'600'000
                            : unit == "day"    ? 86'400'000
                                               : 0;
    if (unit_ms == 0) {
      return bad(expression, "the unit of a rate is second(s), minute(s), hour(s) or day(s)");
    }
    s.period_ms_ = *n * unit_ms;
    return s;
  }
  auto cron = inside("cron(");
  if (!cron) return bad(expression, "an expression is rate(...) or cron(...)");
  auto fields = split(*cron, ' ');
  std::erase(fields, std::string_view());
  if (fields.size() != 6) {
    return bad(expression,
               "a cron has six fields: minutes hours day-of-month month day-of-week year");
  }
  if (auto st = field(expression, "minutes", fields[0], 0, 59, s.minutes_); !st) return st.error();
  if (auto st = field(expression, "hours", fields[1], 0, 23, s.hours_); !st) return st.error();
  const std::string_view dom = fields[2], dow = fields[4];
  if ((dom == "?") == (dow == "?")) {
    return bad(expression, "one of day-of-month and day-of-week is \"?\", and only one");
  }
  if (dom.find_first_of("W") != std::string_view::npos ||
      dow.find_first_of("#L") != std::string_view::npos) {
    return bad(expression, "W, # and L in day-of-week are not supported");
  }
  if (dom == "?") {
    s.any_day_ = true;
  } else if (dom == "L") {
    s.last_day_ = true;
  } else if (auto st = field(expression, "day-of-month", dom, 1, 31, s.days_); !st) {
    return st.error();
  }
  if (auto st = field(expression, "month", fields[3], 1, 12, s.months_, 0, kMonths); !st) {
    return st.error();
  }
  if (dow == "?") {
    s.any_weekday_ = true;
  } else if (auto st = field(expression, "day-of-week", dow, 1, 7, s.weekdays_, 0, kWeekdays);
             !st) {
    return st.error();
  }
  if (auto st = field(expression, "year", fields[5], 1970, 2199, s.years_, 1970); !st) {
    return st.error();
  }
  return s;
}

std::optional<int64_t> Schedule::next_after(int64_t after_ms) const {
  if (period_ms_ > 0) return (after_ms / period_ms_ + 1) * period_ms_;
  // The next whole minute after `after_ms`, then day by day to a day that matches, then the
  // first hour and minute of that day that match.
  int64_t start_min = after_ms / 60'000 + 1;
  sys_days day{days{start_min / 1440}};
  int first_minute_of_day = static_cast<int>(start_min % 1440);
  for (int i = 0; i < 366 * 231; ++i, day += days{1}, first_minute_of_day = 0) {
    const year_month_day ymd{day};
    const int y = static_cast<int>(ymd.year());
    if (y > 2199) return std::nullopt;
    if (!years_.test(static_cast<size_t>(y - 1970))) {
      day = sys_days{year_month_day{ymd.year() + years{1}, January, std::chrono::day{1}}} - days{1};
      continue;
    }
    const unsigned m = static_cast<unsigned>(ymd.month());
    if (!months_.test(m)) continue;
    const unsigned d = static_cast<unsigned>(ymd.day());
    if (!any_day_) {
      const unsigned last =
          static_cast<unsigned>(year_month_day_last{ymd.year(), month_day_last{ymd.month()}}.day());
      if (last_day_ ? d != last : !days_.test(d)) continue;
    }
    if (!any_weekday_ && !weekdays_.test(weekday{day}.c_encoding() + 1)) continue;
    for (int minute = first_minute_of_day; minute < 1440; ++minute) {
      if (hours_.test(static_cast<size_t>(minute / 60)) &&
          minutes_.test(static_cast<size_t>(minute % 60))) {
        return (day.time_since_epoch().count() * 1440LL + minute) * 60'000;
      }
    }
  }
  return std::nullopt;
}

}  // namespace ember::registry
