#include "table.h"

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>

namespace ember::cli {

void Table::print(std::ostream& out) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
    }
    out << line << '\n';
  }
}

std::string format_time(int64_t time_ms) {
  if (time_ms <= 0) return "-";
  const std::chrono::sys_time<std::chrono::seconds> t{std::chrono::seconds(time_ms / 1000)};
  return fmt::format("{:%Y-%m-%d %H:%M:%S}", t);
}

}  // namespace ember::cli
