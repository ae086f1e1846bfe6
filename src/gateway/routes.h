// What the route groups of the API share (api.cc routes a request; function_routes.cc,
// invoke_routes.cc, usage_routes.cc and log_routes.cc answer it).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ember::gateway {

// Plan::route: which route a request took.
enum Route : int {
  kNone,  // rejected before a route was chosen
  kHealth,
  kMetrics,
  kUsage,
  kFunctionUsage,
  kReady,
  kListFunctions,
  kGetFunction,
  kDeploy,
  kPatch,
  kDelete,
  kRollback,
  kInvoke,
  kHttpTrigger,
  kLogs,
  kKvList,
  kKvItem,
};

// The query parameters of a request target, decoded, in order.
std::vector<std::pair<std::string, std::string>> query_params(std::string_view target);

}  // namespace ember::gateway
