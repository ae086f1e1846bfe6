// What the route groups of the API share (api.cc routes a request; function_routes.cc,
// invoke_routes.cc, usage_routes.cc and log_routes.cc answer it).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ember/common/result.h"
#include "ember/gateway/http.h"
#include "ember/registry/registry.h"

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
  kKeys,
  kKey,
  kLambdaInvoke,
  kLambdaList,
  kLambdaCreate,
  kLambdaGet,
  kLambdaDelete,
  kLambdaUpdateCode,
  kAliases,
  kAlias,
  kLambdaAliases,
  kLambdaAlias,
  kLambdaVersions,
  kInvokeAsync,
  kInvocation,
  kDeadLetters,
  kRedrive,
  kConsole,
};

// The function a Lambda API path names: NAME, NAME:QUALIFIER, the partial ARN
// ACCOUNT:function:NAME[:QUALIFIER] or the ARN, percent-decoded; nullopt for an ARN that names
// no function.
struct LambdaTarget {
  std::string name;
  std::string qualifier;
};
std::optional<LambdaTarget> parse_lambda_function(std::string_view raw_segment);

// Lambda's error answer: the type in x-amzn-ErrorType, and {Type, message, Message}.
Response lambda_error(http::status status, std::string_view type, std::string_view message);
// The answer to a request whose signature check failed (Api::check_signature's error).
Response signature_refusal(const Error& error);

// Whether a call that names `qualifier` needs a bearer token or a signature: when the active
// version says "auth": "token", or a version the call may run does (both of a canary alias),
// or when it names a version other than the active one by number: aliases publish versions,
// numbers do not.
bool needs_token(const registry::FunctionRecord& record, std::string_view qualifier);

// ?limit=N&cursor=C of a paged list: `limit` from 1 to `max` (`fallback` when absent); any other
// parameter is an error.
struct PageQuery {
  size_t limit = 0;
  std::string cursor;
};
Result<PageQuery> page_query(std::string_view target, size_t fallback, size_t max);

// The query parameters of a request target, decoded, in order.
std::vector<std::pair<std::string, std::string>> query_params(std::string_view target);

}  // namespace ember::gateway
