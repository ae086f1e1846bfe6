#include "commands.h"

#include <fmt/format.h>

#include <boost/url/encode.hpp>
#include <boost/url/rfc/pchars.hpp>
#include <boost/url/rfc/unreserved_chars.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "bundle.h"
#include "client.h"
#include "table.h"

namespace ember::cli {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kDefaultSocket = "/run/ember/ember.sock";
constexpr const char* kDefaultTokenFile = "/var/lib/ember/admin.token";

constexpr const char* kUsageText = R"(usage: ember [OPTIONS] COMMAND [ARGS]

Commands:
  deploy PATH [--name NAME] [--set KEY=VALUE]...   deploy a folder, .zip or .tar.gz
  invoke NAME [--data JSON|@FILE|@-] [--async] [--version N | --alias A]
  logs NAME [-f] [--since SEQ] [--limit N]        the function's log (the last N lines); -f follows it
  ls                                              the functions
  get NAME                                        one function
  rm NAME                                         remove a function
  rollback NAME VERSION                           make an earlier version active
  usage [--function NAME] [--from T] [--to T]     metered usage per function
  keys NAME [ls | create | rm ID]                 the function's invoke keys
  kv ls NS [--prefix P] | kv get NS KEY | kv put NS KEY VALUE|@FILE [--ttl S] | kv rm NS KEY
  completion bash                                 a bash completion script

Options:
  --url URL       emberd over TCP (http://HOST:PORT); EMBER_URL; default: its Unix socket
  --socket PATH   emberd's Unix socket; EMBER_SOCKET; default /run/ember/ember.sock
  --token TOKEN   the admin token for --url; EMBER_TOKEN, else /var/lib/ember/admin.token
  --json          print what emberd answered, as JSON, for scripts
  -h, --help      this text

Exit codes: 0 done, 1 emberd answered an error, 2 bad command line, 3 emberd unreachable,
4 the invoked function failed.
)";

constexpr const char* kBashCompletion =
    R"BASH(# bash completion for ember: source it, or install it as
# /usr/share/bash-completion/completions/ember
_ember() {
  local cur prev words cword
  _init_completion 2>/dev/null || { cur="${COMP_WORDS[COMP_CWORD]}"; prev="${COMP_WORDS[COMP_CWORD-1]}"; cword=$COMP_CWORD; words=("${COMP_WORDS[@]}"); }
  local commands="deploy invoke logs ls get rm rollback usage keys kv completion"
  local i cmd=""
  for ((i = 1; i < cword; i++)); do
    case "${words[i]}" in
      --url|--socket|--token) ((i++)) ;;
      -*) ;;
      *) cmd="${words[i]}"; break ;;
    esac
  done
  if [[ -z "$cmd" ]]; then
    COMPREPLY=($(compgen -W "$commands --url --socket --token --json --help" -- "$cur"))
    return
  fi
  case "$cmd" in
    deploy)
      if [[ "$prev" == "--name" || "$prev" == "--set" ]]; then return; fi
      COMPREPLY=($(compgen -f -- "$cur")) ;;
    invoke|logs|get|rm|rollback|keys)
      if [[ "$prev" == "$cmd" ]]; then
        COMPREPLY=($(compgen -W "$(ember ls --names 2>/dev/null)" -- "$cur"))
      elif [[ "$cmd" == keys ]]; then
        COMPREPLY=($(compgen -W "ls create rm" -- "$cur"))
      elif [[ "$cmd" == invoke ]]; then
        COMPREPLY=($(compgen -W "--data --async --version --alias" -- "$cur"))
      elif [[ "$cmd" == logs ]]; then
        COMPREPLY=($(compgen -W "-f --since --limit" -- "$cur"))
      fi ;;
    kv) [[ "$prev" == kv ]] && COMPREPLY=($(compgen -W "ls get put rm" -- "$cur")) ;;
    usage) COMPREPLY=($(compgen -W "--function --from --to" -- "$cur")) ;;
    completion) COMPREPLY=($(compgen -W "bash" -- "$cur")) ;;
  esac
}
complete -F _ember ember
)BASH";

// The command being run: where to send, how to print.
struct Context {
  Client client;
  bool json_output = false;
  bool tty = false;
  std::ostream& out;
  std::ostream& err;
};

// A command line read into positional arguments and options, against the options a command
// takes: those in `valued` take a value (--name N or --name=N), those in `flags` none.
struct Args {
  std::vector<std::string> positional;
  std::map<std::string, std::vector<std::string>> options;

  bool has(const std::string& name) const { return options.count(name) != 0; }
  std::string value(const std::string& name, const std::string& fallback = {}) const {
    auto it = options.find(name);
    return it == options.end() || it->second.empty() ? fallback : it->second.back();
  }
};

struct UsageError {
  std::string message;
};
struct HelpAsked {};

// Every command also takes --json (which sets the context's output) and -h/--help. A word after
// `--`, or one that reads as a negative number, is an argument, not an option.
Args parse(Context& c, const std::vector<std::string>& words, const std::set<std::string>& valued,
           const std::set<std::string>& flags) {
  Args a;
  bool only_positional = false;
  for (size_t i = 0; i < words.size(); ++i) {
    const std::string& w = words[i];
    const bool number = w.size() > 1 && w[0] == '-' &&
                        (std::isdigit(static_cast<unsigned char>(w[1])) != 0 || w[1] == '.');
    if (only_positional || w.size() < 2 || w[0] != '-' || number) {
      a.positional.push_back(w);
      continue;
    }
    if (w == "--json") {
      c.json_output = true;
      continue;
    }
    if (w == "-h" || w == "--help") throw HelpAsked{};
    if (w == "--") {
      only_positional = true;
      continue;
    }
    std::string name = w, value;
    bool inline_value = false;
    if (size_t eq = w.find('='); eq != std::string::npos && w.rfind("--", 0) == 0) {
      name = w.substr(0, eq);
      value = w.substr(eq + 1);
      inline_value = true;
    }
    if (valued.count(name)) {
      if (!inline_value) {
        if (i + 1 >= words.size()) throw UsageError{name + " needs a value"};
        value = words[++i];
      }
      a.options[name].push_back(value);
    } else if (flags.count(name) && !inline_value) {
      a.options[name];
    } else {
      throw UsageError{"unknown option " + name};
    }
  }
  return a;
}

std::string encode_segment(std::string_view s) {
  return boost::urls::encode(s, boost::urls::unreserved_chars);
}

// Prints emberd's error answer, or a transport failure, and gives the exit code.
int fail(const Context& c, const Reply& reply) {
  json body = json::parse(reply.body, nullptr, false);
  if (c.json_output && !body.is_discarded()) {
    c.out << body.dump() << '\n';
  }
  std::string message;
  if (body.is_object() && body.contains("error") && body["error"].is_object()) {
    const json& e = body["error"];
    message = e.value("code", "error") + ": " + e.value("message", "");
  } else if (body.is_object() && body.contains("errorMessage")) {
    message = body.value("errorType", "Error") + ": " + body.value("errorMessage", "");
  } else {
    message = fmt::format("HTTP {}: {}", reply.status, reply.body);
  }
  c.err << "ember: " << message << '\n';
  return kApiError;
}

int unreachable(const Context& c, const Error& e) {
  c.err << "ember: " << e.message << '\n';
  return e.code == Errc::kUnavailable ? kUnreachable : kApiError;
}

json parse_body(const Reply& reply) { return json::parse(reply.body, nullptr, false); }

// The answer to a request: its JSON when it succeeded (2xx); else the exit code, the error
// having been printed.
struct Answer {
  json body;
  int status = 0;
  int code = kOk;
  explicit operator bool() const { return code == kOk; }
};

Answer ask(const Context& c, std::string_view method, const std::string& target,
           const std::string& body = {}, const Headers& headers = {},
           const Progress& progress = {}) {
  auto r = c.client.request(method, target, body, headers, progress);
  if (!r) return Answer{{}, 0, unreachable(c, r.error())};
  if (r->status < 200 || r->status >= 300) return Answer{{}, r->status, fail(c, *r)};
  // An empty answer (204) reads as {}.
  return Answer{r->body.empty() ? json::object() : parse_body(*r), r->status, kOk};
}

// With --json, prints `j` as the command's whole output and says so.
bool printed_json(const Context& c, const json& j) {
  if (c.json_output) c.out << j.dump(2) << '\n';
  return c.json_output;
}

std::string function_path(const std::string& name) {
  return "/v1/functions/" + encode_segment(name);
}

std::string str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "-";
  return it->is_string() ? it->get<std::string>() : it->dump();
}

std::string instances_of(const json& record) {
  auto it = record.find("instances");
  if (it == record.end() || !it->is_object()) return "-";
  int live = 0, busy = 0;
  for (const auto& [state, n] : it->items()) {
    if (!n.is_number_integer()) continue;
    live += n.get<int>();
    if (state == "busy") busy += n.get<int>();
  }
  return busy > 0 ? fmt::format("{} ({} busy)", live, busy) : std::to_string(live);
}

std::string bundle_name(const std::string& path) {
  fs::path p = fs::path(path).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  if (p.filename() == "." || p.empty()) p = fs::current_path();
  std::string name = p.filename().string();
  for (std::string_view ext : {".tar.gz", ".tgz", ".zip"}) {
    if (name.size() > ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0) {
      return name.substr(0, name.size() - ext.size());
    }
  }
  return name;
}

int deploy(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {"--name", "--set"}, {});
  if (a.positional.size() != 1)
    throw UsageError{"deploy takes one PATH: a folder, .zip or .tar.gz"};
  const std::string& path = a.positional[0];
  const std::string name = a.value("--name", bundle_name(path));
  std::string query;
  if (auto it = a.options.find("--set"); it != a.options.end()) {
    for (const std::string& kv : it->second) {
      size_t eq = kv.find('=');
      if (eq == std::string::npos || eq == 0) throw UsageError{"--set takes KEY=VALUE, got " + kv};
      query += (query.empty() ? "?" : "&") + encode_segment(kv.substr(0, eq)) + "=" +
               encode_segment(kv.substr(eq + 1));
    }
  }
  auto bundle = read_bundle(path);
  if (!bundle) {
    c.err << "ember: " << bundle.error().message << '\n';
    return kUsage;
  }
  // Progress for bundles big enough to wait for, and only where someone watches.
  Progress progress;
  if (c.tty && bundle->size() >= (1u << 20)) {
    progress = [&c](uint64_t sent, uint64_t total) {
      c.err << fmt::format("\ruploading {:.1f} of {:.1f} MiB ({}%)", sent / 1048576.0,
                           total / 1048576.0, sent * 100 / total)
            << std::flush;
      if (sent == total) c.err << '\n';
    };
  }
  Answer r = ask(c, "PUT", function_path(name) + query, *bundle, {}, progress);
  if (!r) return r.code;
  if (printed_json(c, r.body)) return kOk;
  const json config = r.body.value("config", json::object());
  c.out << fmt::format("{}: version {} {} ({}, {}, {} bytes)\n", name,
                       str(r.body, "active_version"),
                       r.status == 201 ? "deployed, new function" : "active",
                       str(config, "runtime"), str(config, "handler"), bundle->size());
  return kOk;
}

Result<std::string> read_data(const std::string& data) {
  if (data.empty() || data[0] != '@') return data;
  std::ostringstream bytes;
  if (data == "@-") {
    bytes << std::cin.rdbuf();
    return bytes.str();
  }
  std::ifstream in(data.substr(1), std::ios::binary);
  if (!in) return Error::system("read", data.substr(1), errno);
  bytes << in.rdbuf();
  return bytes.str();
}

int invoke(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {"--data", "-d", "--version", "--alias"}, {"--async"});
  if (a.positional.size() != 1) throw UsageError{"invoke takes one function NAME"};
  if (a.has("--version") && a.has("--alias")) throw UsageError{"give --version or --alias"};
  auto data = read_data(a.value("--data", a.value("-d", "")));
  if (!data) {
    c.err << "ember: " << data.error().message << '\n';
    return kUsage;
  }
  std::string target = "/v1/functions/" + encode_segment(a.positional[0]) + "/invoke";
  std::string query;
  if (a.has("--async")) query += "&mode=async";
  if (a.has("--version")) query += "&version=" + encode_segment(a.value("--version"));
  if (a.has("--alias")) query += "&alias=" + encode_segment(a.value("--alias"));
  if (!query.empty()) target += "?" + query.substr(1);
  auto r = c.client.request("POST", target, *data, {{"Content-Type", "application/json"}});
  if (!r) return unreachable(c, r.error());
  const Reply& reply = *r;
  const std::string function_error = reply.header("x-ember-function-error");
  if (a.has("--async")) {
    if (reply.status != 202 && reply.status != 200) return fail(c, reply);
    json accepted = parse_body(reply);
    if (c.json_output) {
      printed_json(c, accepted);
    } else {
      c.out << str(accepted, "id") << '\n';
    }
    return kOk;
  }
  // The function ran when emberd says how long it took; otherwise the call never reached it.
  // A throttled or refused call (429, 503) did not run, whatever an earlier attempt did.
  const bool refused = reply.status == 429 || reply.status == 503;
  const bool ran =
      !refused && (!reply.header("x-ember-duration-ms").empty() || !function_error.empty());
  if (!ran && (reply.status < 200 || reply.status >= 300)) return fail(c, reply);
  if (c.json_output) {
    json headers = json::object();
    for (const auto& [name, value] : reply.headers) {
      if (name.rfind("x-ember-", 0) == 0) headers[name] = value;
    }
    json body = parse_body(reply);
    printed_json(c, json{{"status", reply.status},
                         {"headers", headers},
                         {"body", body.is_discarded() ? json(reply.body) : body}});
  } else {
    c.out << reply.body;
    if (!reply.body.empty() && reply.body.back() != '\n') c.out << '\n';
  }
  if (!function_error.empty() || reply.status >= 300) {
    c.err << fmt::format("ember: the function failed ({}, HTTP {}); `ember logs {}` has its log\n",
                         function_error.empty() ? "error" : function_error, reply.status,
                         a.positional[0]);
    return kFunctionFailed;
  }
  return kOk;
}

void print_log_line(const Context& c, const json& line) {
  if (c.json_output) {
    c.out << line.dump() << '\n' << std::flush;
    return;
  }
  if (line.value("truncated", false) && !line.contains("text")) {
    c.out << "... (older lines were dropped)\n";
    return;
  }
  const std::string request = line.value("request_id", "");
  c.out << fmt::format("{} {:6} {} {}\n", format_time(line.value("time_ms", int64_t{0})),
                       line.value("stream", ""), request.empty() ? "-" : request.substr(0, 8),
                       line.value("text", ""))
        << std::flush;
}

int logs(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {"--since", "--limit"}, {"-f", "--follow"});
  if (a.positional.size() != 1) throw UsageError{"logs takes one function NAME"};
  const std::string base = "/v1/functions/" + encode_segment(a.positional[0]) + "/logs";
  const std::string since = a.value("--since", "0");
  if (a.has("-f") || a.has("--follow")) {
    std::string pending;
    auto r = c.client.stream("GET", base + "?follow=1&since=" + encode_segment(since),
                             [&](std::string_view piece) {
                               pending.append(piece);
                               size_t nl;
                               while ((nl = pending.find('\n')) != std::string::npos) {
                                 std::string line = pending.substr(0, nl);
                                 pending.erase(0, nl + 1);
                                 if (line.empty()) continue;  // the stream's keep-alive
                                 json j = json::parse(line, nullptr, false);
                                 if (!j.is_discarded()) print_log_line(c, j);
                               }
                               return static_cast<bool>(c.out);
                             });
    if (!r) return unreachable(c, r.error());
    if (r->status != 200) return fail(c, *r);
    return kOk;
  }
  // Every line from `since` to the end (the log is at most logs.bytes_per_function), of which
  // --limit N keeps the last N, as tail -n does.
  size_t keep = std::numeric_limits<size_t>::max();
  if (a.has("--limit")) {
    const std::string n = a.value("--limit");
    if (n.empty() || n.size() > 9 || n.find_first_not_of("0123456789") != std::string::npos) {
      throw UsageError{"--limit takes a number of lines, got " + n};
    }
    keep = std::stoul(n);
  }
  // The pass stops at the end, or after kMaxPages pages of a function that logs faster than
  // they are read; only the last `keep` lines are held meanwhile.
  constexpr int kMaxPages = 100;
  std::deque<json> lines;
  bool truncated = false;  // lines were dropped from the log before they were read
  bool more = false;       // the pass stopped before the end
  std::string from = since;
  for (int pages = 0;; ++pages) {
    if (pages == kMaxPages) {
      more = true;
      break;
    }
    Answer page = ask(c, "GET", base + "?limit=1000&since=" + encode_segment(from));
    if (!page) return page.code;
    truncated = truncated || page.body.value("truncated", false);
    const json got = page.body.value("lines", json::array());
    for (const json& line : got) {
      lines.push_back(line);
      if (lines.size() > keep) lines.pop_front();
    }
    from = page.body.value("next", json(0)).dump();
    if (got.size() < 1000) break;
  }
  if (a.has("--limit")) truncated = false;  // the lines left out were left out on purpose
  json listed = json::array();
  for (json& line : lines) listed.push_back(std::move(line));
  if (printed_json(
          c, json{{"lines", listed}, {"next", json::parse(from)}, {"truncated", truncated}})) {
    return kOk;
  }

  if (truncated) c.out << "... (older lines were dropped)\n";
  for (const json& line : listed) print_log_line(c, line);
  if (more) c.out << "... (more follows: the function writes faster than this reads; -f follows)\n";
  return kOk;
}

int list(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {}, {"--names"});
  if (!a.positional.empty()) throw UsageError{"ls takes no arguments"};
  json all = json::array();
  std::string cursor;
  do {
    std::string target = "/v1/functions?limit=1000";
    if (!cursor.empty()) target += "&cursor=" + encode_segment(cursor);
    Answer page = ask(c, "GET", target);
    if (!page) return page.code;
    for (json& f : page.body.value("functions", json::array())) all.push_back(std::move(f));
    cursor = page.body.value("next_cursor", "");
  } while (!cursor.empty());
  if (a.has("--names")) {  // for shell completion
    for (const json& f : all) c.out << f.value("name", "") << '\n';
    return kOk;
  }
  if (printed_json(c, json{{"functions", all}})) return kOk;
  Table t({"NAME", "VERSION", "RUNTIME", "HANDLER", "MEMORY", "INSTANCES", "UPDATED"});
  for (const json& f : all) {
    const json config = f.value("config", json::object());
    t.add({f.value("name", ""), str(f, "active_version"), str(config, "runtime"),
           str(config, "handler"), str(config, "memory_mb") + " MB", instances_of(f),
           format_time(f.value("updated_ms", int64_t{0}))});
  }
  t.print(c.out);
  return kOk;
}

int get(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {}, {});
  if (a.positional.size() != 1) throw UsageError{"get takes one function NAME"};
  Answer r = ask(c, "GET", function_path(a.positional[0]));
  if (!r) return r.code;
  if (printed_json(c, r.body)) return kOk;
  const json& f = r.body;
  const json config = f.value("config", json::object());
  Table t({"name", f.value("name", "")});
  t.add({"active version", str(f, "active_version")});
  for (const char* key : {"runtime", "handler", "memory_mb", "timeout_ms", "concurrency",
                          "max_instances", "min_instances", "idle_timeout_s", "network", "auth"}) {
    if (config.contains(key)) t.add({key, str(config, key)});
  }
  t.add({"instances", instances_of(f)});
  t.add({"bundle sha256", str(f, "bundle_sha256")});
  t.add({"updated", format_time(f.value("updated_ms", int64_t{0}))});
  t.print(c.out);
  const json versions = f.value("versions", json::array());
  if (!versions.empty() && versions[0].is_object()) {
    c.out << '\n';
    Table v({"VERSION", "CREATED", "BYTES", "SHA256"});
    for (const json& ver : versions) {
      v.add({str(ver, "version"), format_time(ver.value("created_ms", int64_t{0})),
             str(ver, "bundle_bytes"), str(ver, "bundle_sha256").substr(0, 12)});
    }
    v.print(c.out);
  }
  const json aliases = f.value("aliases", json::array());
  if (!aliases.empty()) {
    c.out << '\n';
    Table al({"ALIAS", "VERSION"});
    for (const json& alias : aliases) al.add({str(alias, "name"), str(alias, "version")});
    al.print(c.out);
  }
  return kOk;
}

int remove(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {}, {});
  if (a.positional.size() != 1) throw UsageError{"rm takes one function NAME"};
  Answer r = ask(c, "DELETE", function_path(a.positional[0]));
  if (!r) return r.code;
  if (!printed_json(c, r.body)) c.out << a.positional[0] << ": removed\n";
  return kOk;
}

int rollback(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {}, {});
  if (a.positional.size() != 2) throw UsageError{"rollback takes a function NAME and a VERSION"};
  Answer r =
      ask(c, "POST",
          function_path(a.positional[0]) + "/rollback?to=" + encode_segment(a.positional[1]));
  if (!r) return r.code;
  if (!printed_json(c, r.body)) {
    c.out << fmt::format("{}: version {} active\n", a.positional[0], str(r.body, "active_version"));
  }
  return kOk;
}

int usage(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {"--function", "--from", "--to"}, {});
  if (!a.positional.empty()) throw UsageError{"usage takes options only"};
  std::string query;
  for (const char* name : {"--function", "--from", "--to"}) {
    if (a.has(name)) query += fmt::format("&{}={}", name + 2, encode_segment(a.value(name)));
  }
  Answer r = ask(c, "GET", "/v1/usage" + (query.empty() ? "" : "?" + query.substr(1)));
  if (!r) return r.code;
  if (printed_json(c, r.body)) return kOk;
  const json& u = r.body;
  c.out << "from " << str(u, "from") << " to " << str(u, "to") << "\n\n";
  const bool priced = u.contains("prices");
  std::vector<std::string> header{"FUNCTION", "CALLS",     "ERRORS", "THROTTLES",
                                  "COLD",     "BILLED MS", "GB-S",   "KV R/W"};
  if (priced) header.push_back("COST");
  Table t(header);
  auto row = [&](const std::string& name, const json& f) {
    std::vector<std::string> cells{name,
                                   str(f, "invocations"),
                                   str(f, "errors"),
                                   str(f, "throttles"),
                                   str(f, "cold_starts"),
                                   str(f, "billed_ms"),
                                   fmt::format("{:.6f}", f.value("gb_seconds", 0.0)),
                                   str(f, "kv_reads") + "/" + str(f, "kv_writes")};
    if (priced) cells.push_back(f.contains("cost") ? str(f["cost"], "total") : "-");
    t.add(std::move(cells));
  };
  for (const json& f : u.value("functions", json::array())) row(f.value("function", ""), f);
  if (u.contains("total")) row("(total)", u["total"]);
  t.print(c.out);
  return kOk;
}

int keys(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {}, {});
  const auto& p = a.positional;
  const std::string action = p.size() > 1 ? p[1] : "ls";
  if (p.empty() || !((action == "ls" && p.size() <= 2) || (action == "create" && p.size() == 2) ||
                     (action == "rm" && p.size() == 3))) {
    throw UsageError{"keys NAME [ls | create | rm ID]"};
  }
  const std::string base = function_path(p[0]) + "/keys";
  if (action == "ls") {
    Answer r = ask(c, "GET", base);
    if (!r) return r.code;
    if (printed_json(c, r.body)) return kOk;
    Table t({"ID", "CREATED"});
    for (const json& key : r.body.value("keys", json::array())) {
      t.add({str(key, "id"), format_time(key.value("created_ms", int64_t{0}))});
    }
    t.print(c.out);
  } else if (action == "create") {
    Answer r = ask(c, "POST", base);
    if (!r) return r.code;
    if (printed_json(c, r.body)) return kOk;
    c.out << str(r.body, "token") << '\n';
    c.err << "ember: key " << str(r.body, "id")
          << " created; its token is shown this once, store it now\n";
  } else {
    Answer r = ask(c, "DELETE", base + "/" + encode_segment(p[2]));
    if (!r) return r.code;
    if (!printed_json(c, r.body)) c.out << p[2] << ": revoked\n";
  }
  return kOk;
}

int kv_list(Context& c, const std::string& base, const Args& a) {
  json items = json::array();
  std::string cursor;
  do {
    std::string target = base + "?limit=" + encode_segment(a.value("--limit", "1000"));
    if (a.has("--prefix")) target += "&prefix=" + encode_segment(a.value("--prefix"));
    if (!cursor.empty()) target += "&cursor=" + encode_segment(cursor);
    Answer page = ask(c, "GET", target);
    if (!page) return page.code;
    for (json& item : page.body.value("items", json::array())) items.push_back(std::move(item));
    const json next = page.body.value("cursor", json());
    cursor = next.is_string() ? next.get<std::string>() : "";
  } while (!cursor.empty() && !a.has("--limit"));  // --limit: one page of that size
  if (printed_json(c, json{{"items", items}})) return kOk;
  Table t({"KEY", "VERSION", "VALUE"});
  for (const json& item : items) {
    std::string value = item.contains("value") ? item["value"].dump() : "-";
    if (value.size() > 60) value = value.substr(0, 57) + "...";
    t.add({str(item, "key"), str(item, "version"), value});
  }
  t.print(c.out);
  return kOk;
}

int kv(Context& c, const std::vector<std::string>& words) {
  Args a = parse(c, words, {"--prefix", "--ttl", "--limit"}, {});
  const auto& p = a.positional;
  const std::string action = p.empty() ? "" : p[0];
  if (!((action == "ls" && p.size() == 2) ||
        ((action == "get" || action == "rm") && p.size() == 3) ||
        (action == "put" && p.size() == 4))) {
    throw UsageError{
        "kv ls NS | kv get NS KEY | kv put NS KEY VALUE|@FILE [--ttl S] | kv rm NS KEY"};
  }
  const std::string base = "/v1/kv/" + encode_segment(p[1]);
  if (action == "ls") return kv_list(c, base, a);
  const std::string target = base + "/" + encode_segment(p[2]);
  if (action == "get") {
    Answer r = ask(c, "GET", target);
    if (!r) return r.code;
    if (!printed_json(c, r.body)) {
      c.out << (r.body.contains("value") ? r.body["value"].dump(2) : "null") << '\n';
    }
  } else if (action == "put") {
    auto value = read_data(p[3]);
    if (!value) {
      c.err << "ember: " << value.error().message << '\n';
      return kUsage;
    }
    // A value that is not JSON is stored as a JSON string, as a user typing text means.
    std::string body = *value;
    if (!json::accept(body)) body = json(body).dump();
    std::string put_target = target;
    if (a.has("--ttl")) put_target += "?ttl_s=" + encode_segment(a.value("--ttl"));
    Answer r = ask(c, "PUT", put_target, body, {{"Content-Type", "application/json"}});
    if (!r) return r.code;
    if (!printed_json(c, r.body)) c.out << p[2] << ": version " << str(r.body, "version") << '\n';
  } else {
    Answer r = ask(c, "DELETE", target);
    if (!r) return r.code;
    if (!printed_json(c, r.body)) {
      c.out << p[2] << (r.body.value("deleted", false) ? ": deleted" : ": was not there") << '\n';
    }
  }
  return kOk;
}

std::optional<std::string> read_token_file(const std::string& path) {
  std::ifstream in(path);
  std::string token;
  if (!in || !std::getline(in, token)) return std::nullopt;
  while (!token.empty() && (token.back() == '\r' || token.back() == ' ')) token.pop_back();
  return token;
}

}  // namespace

int run(const std::vector<std::string>& args, const Environment& env, std::ostream& out,
        std::ostream& err) {
  // Global options come before the command.
  std::string url = env.get("EMBER_URL").value_or("");
  std::string socket = env.get("EMBER_SOCKET").value_or(kDefaultSocket);
  std::optional<std::string> token = env.get("EMBER_TOKEN");
  bool json_output = false;
  size_t i = 0;
  try {
    for (; i < args.size(); ++i) {
      const std::string& w = args[i];
      // --NAME VALUE or --NAME=VALUE, the name matched whole.
      auto option = [&](std::string_view name) -> std::optional<std::string> {
        if (w == name) {
          if (i + 1 >= args.size()) throw UsageError{std::string(name) + " needs a value"};
          return args[++i];
        }
        if (w.size() > name.size() && w.compare(0, name.size(), name) == 0 &&
            w[name.size()] == '=') {
          return w.substr(name.size() + 1);
        }
        return std::nullopt;
      };
      if (w == "-h" || w == "--help" || w == "help") throw HelpAsked{};
      if (w == "--json") {
        json_output = true;
      } else if (auto v = option("--url")) {
        url = *v;
      } else if (auto v2 = option("--socket")) {
        socket = *v2;
      } else if (auto v3 = option("--token")) {
        token = *v3;
      } else if (!w.empty() && w[0] == '-') {
        throw UsageError{"unknown option " + w};
      } else {
        break;
      }
    }
    if (i >= args.size()) throw UsageError{"no command given"};
    const std::string command = args[i];
    // Options may also follow the command, as people type them: each command's parse reads them.
    const std::vector<std::string> words(args.begin() + static_cast<long>(i) + 1, args.end());
    if (command == "completion") {
      if (words.size() != 1 || words[0] != "bash") throw UsageError{"completion bash"};
      out << kBashCompletion;
      return kOk;
    }
    Endpoint endpoint;
    if (!url.empty()) {
      if (auto st = parse_url(url, endpoint); !st) throw UsageError{st.error().message};
      endpoint.token = token ? *token : read_token_file(kDefaultTokenFile).value_or("");
    } else {
      endpoint.socket = socket;
    }
    Context c{Client(std::move(endpoint)), json_output, env.stderr_is_tty, out, err};
    static const std::map<std::string, int (*)(Context&, const std::vector<std::string>&)>
        kCommands{{"deploy", deploy}, {"invoke", invoke}, {"logs", logs},         {"ls", list},
                  {"get", get},       {"rm", remove},     {"rollback", rollback}, {"usage", usage},
                  {"keys", keys},     {"kv", kv}};
    auto it = kCommands.find(command);
    if (it == kCommands.end()) throw UsageError{"unknown command " + command};
    return it->second(c, words);
  } catch (const HelpAsked&) {
    out << kUsageText;
    return kOk;
  } catch (const UsageError& e) {
    err << "ember: " << e.message << "\n"
        << "run `ember --help` for the commands\n";
    return kUsage;
  }
}

}  // namespace ember::cli
