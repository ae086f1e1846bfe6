// Human output of `ember`: aligned columns, times and sizes as people read them.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace ember::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns separated by two spaces and padded to the widest cell; the last is not padded.
  void print(std::ostream& out) const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// "2026-12-07 05:12:09" (UTC) for a wall-clock time in milliseconds; "-" for 0.
std::string format_time(int64_t time_ms);

}  // namespace ember::cli
