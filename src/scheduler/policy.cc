#include "ember/scheduler/policy.h"

#include <algorithm>
#include <cmath>

namespace ember::scheduler {

namespace {
bool serves(const MemberView& m, int version) { return m.version == version && !m.stopping; }
}  // namespace

std::optional<size_t> pick_instance(const std::vector<MemberView>& members, int version) {
  std::optional<size_t> best;
  for (size_t i = 0; i < members.size(); ++i) {
    const auto& m = members[i];
    if (!serves(m, version) || m.starting || m.leased >= m.concurrency) continue;
    if (!best || m.last_used > members[*best].last_used ||
        (m.last_used == members[*best].last_used && m.id > members[*best].id)) {
      best = i;
    }
  }
  return best;
}

bool may_pipeline(int depth, std::chrono::nanoseconds mean_call, int quiet_calls) {
  return depth > 0 && mean_call.count() > 0 && mean_call < kPipelineMaxCall &&
         quiet_calls >= kPipelineQuietCalls;
}

std::optional<size_t> pick_pipelined(const std::vector<MemberView>& members, int version,
                                     int depth) {
  std::optional<size_t> best;
  for (size_t i = 0; i < members.size(); ++i) {
    const auto& m = members[i];
    if (!serves(m, version) || m.starting || m.leased >= m.concurrency + depth ||
        m.running_for >= kPipelineMaxCall) {
      continue;
    }
    if (!best || m.leased < members[*best].leased ||
        (m.leased == members[*best].leased && m.last_used < members[*best].last_used)) {
      best = i;
    }
  }
  return best;
}

namespace {

// Whether the queue is expected to wait longer than one more instance costs to start.
bool waiting_costs_more(const StartInputs& in, int serving, int uncovered, int per_instance) {
  if (serving == 0 || in.start_cost.count() <= 0) return true;
  if (in.oldest_wait >= in.start_cost) return true;
  if (in.mean_call.count() <= 0) return false;
  const int64_t rounds = (uncovered + serving * per_instance - 1) / (serving * per_instance);
  if (rounds * in.mean_call <= in.start_cost) return false;
  const std::optional<double> blocked = in.blocked_share ? in.blocked_share() : std::nullopt;
  return blocked && *blocked >= kMinBlockedShare;
}

}  // namespace

int starts_needed(const std::vector<MemberView>& members, int version, const StartInputs& in) {
  const int per_instance = std::max(1, in.concurrency);
  // Room in starting instances: calls handed over early (before READY) already fill some.
  int live = 0, starting = 0, serving = 0, starting_room = 0;
  for (const auto& m : members) {
    if (m.stopping) continue;
    ++live;  // every version counts against max_instances while it runs
    if (m.version != version) continue;
    if (m.starting) {
      ++starting;
      starting_room += std::max(0, per_instance - m.leased);
    } else {
      ++serving;
    }
  }
  const int uncovered = in.waiters - starting_room;
  if (uncovered <= 0) return 0;
  int wanted = (uncovered + per_instance - 1) / per_instance;
  wanted = std::min(wanted, in.max_instances - live);
  wanted = std::min(wanted, in.max_concurrent_starts - starting);
  if (in.eager_instances > 0) {
    const int eager = std::max(0, in.eager_instances - serving - starting);
    if (wanted > eager && !waiting_costs_more(in, serving, uncovered, per_instance)) {
      wanted = eager;
    }
  }
  return std::max(0, wanted);
}

std::vector<uint64_t> idle_to_reap(const std::vector<MemberView>& members, Clock::time_point now,
                                   const ReapInputs& in) {
  std::vector<uint64_t> out;
  std::vector<const MemberView*> expired;
  int active_live = 0;
  for (const auto& m : members) {
    if (m.stopping) continue;
    if (m.version != in.active_version) {
      if (!m.starting && m.leased == 0) out.push_back(m.id);
      continue;
    }
    ++active_live;
    if (!m.starting && m.leased == 0 && now - m.idle_since >= in.idle_timeout) {
      expired.push_back(&m);
    }
  }
  // The longest idle go first; min_instances of the active version stay.
  std::sort(expired.begin(), expired.end(),
            [](const MemberView* a, const MemberView* b) { return a->idle_since < b->idle_since; });
  int can_stop = std::max(0, active_live - in.min_instances);
  for (const MemberView* m : expired) {
    if (can_stop-- <= 0) break;
    out.push_back(m->id);
  }
  return out;
}

int prewarm_needed(const std::vector<MemberView>& members, int active_version, int min_instances) {
  int live = 0;
  for (const auto& m : members) {
    if (!m.stopping && m.version == active_version) ++live;
  }
  return std::max(0, min_instances - live);
}

std::optional<std::vector<EvictionCandidate>> plan_eviction(std::vector<EvictionCandidate> idle,
                                                            int64_t used_mb, int64_t budget_mb,
                                                            int64_t needed_mb) {
  std::vector<EvictionCandidate> victims;
  std::sort(idle.begin(), idle.end(),
            [](const auto& a, const auto& b) { return a.last_used < b.last_used; });
  for (const auto& c : idle) {
    if (used_mb + needed_mb <= budget_mb) break;
    victims.push_back(c);
    used_mb -= c.memory_mb;
  }
  if (used_mb + needed_mb > budget_mb) return std::nullopt;
  return victims;
}

void IdleHistogram::add(Clock::duration idle) {
  const auto bin = std::chrono::duration_cast<std::chrono::minutes>(idle).count();
  if (bin < 0 || bin >= kBins) {
    ++out_of_range_;
    return;
  }
  ++bins_[static_cast<size_t>(bin)];
  ++samples_;
}

KeepAlive hybrid_keep_alive(const IdleHistogram& histogram, Clock::duration fixed) {
  constexpr uint32_t kMinSamples = 10;
  constexpr double kMinVariation = 2.0;
  const KeepAlive fallback{Clock::duration(0), fixed, false};
  const uint32_t n = histogram.samples();
  if (n < kMinSamples || histogram.out_of_range() > n) return fallback;
  const auto& bins = histogram.bins();
  const double mean = static_cast<double>(n) / IdleHistogram::kBins;
  double variance = 0;
  for (uint32_t count : bins) variance += (count - mean) * (count - mean);
  variance /= IdleHistogram::kBins;
  if (std::sqrt(variance) / mean < kMinVariation) return fallback;
  // The bins holding the 5th and the 99th percentile.
  auto bin_of = [&](double fraction) {
    const double want = fraction * n;
    uint32_t seen = 0;
    for (int i = 0; i < IdleHistogram::kBins; ++i) {
      seen += bins[static_cast<size_t>(i)];
      if (seen >= want) return i;
    }
    return IdleHistogram::kBins - 1;
  };
  const auto head = IdleHistogram::kBin * bin_of(0.05);
  const auto tail = IdleHistogram::kBin * (bin_of(0.99) + 1);
  KeepAlive k;
  k.from_histogram = true;
  k.prewarm = std::chrono::duration_cast<Clock::duration>(head * 0.9);
  k.keep_alive = std::chrono::duration_cast<Clock::duration>(tail * 1.1) - k.prewarm;
  return k;
}

}  // namespace ember::scheduler
