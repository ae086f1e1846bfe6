// How a worker reaches the key-value service: the namespaces a function's manifest grants it,
// and the handler that carries its KV frames to the service and the replies back to the event
// loop.
#pragma once

#include <boost/asio/io_context.hpp>

#include "ember/kv/service.h"
#include "ember/registry/manifest.h"
#include "ember/worker/call.h"

namespace ember::runtime {

// `function`'s own namespace read-write, and what its configuration shares with it.
kv::Grants kv_grants(const std::string& function, const registry::FunctionConfig& config);

// Serves a worker's KV requests with `service` under `grants`; replies are posted to `io`.
// `service` must outlive every worker given the handler.
worker::KvHandler kv_handler(boost::asio::io_context& io, kv::Service& service, kv::Grants grants);

}  // namespace ember::runtime
