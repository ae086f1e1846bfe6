#!/usr/bin/python3
"""Ember's benchmark: every scenario of docs/benchmarks.md against emberd (sandbox on) and its
references, in one run, written to bench/results/<date>-<commit>.md.

Run through bench/run, which installs the tools and builds Ember first. Everything talks only to
127.0.0.1, every load loop is bounded in time or count, and every process started here is
stopped before the script ends.
"""
import argparse
import concurrent.futures
import datetime
import http.client
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
EMBERD = os.path.join(ROOT, "build", "src", "daemon", "emberd")
SANDBOX_BENCH = os.path.join(ROOT, "build", "bench", "ember-bench-sandbox")
NODE = "/usr/bin/node"
PYTHON = "/usr/bin/python3"
TOKEN = "bench-admin-token-0123456789abcdef"
EVENT = b'{"name":"bench"}'
# A module of 2,000 lines for the cold start of a python function with real code to load
# (bench/functions/imports.py imports it): 400 small functions.
LARGE_MODULE = "".join(f"def f{i}(x):\n    y = x * {i} + {i}\n    if y % 3 == 0:\n"
                       f"        return [y, str(y), {{'k': y}}]\n    return y\n\n"
                       for i in range(400))
CLEAN_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
# As root, nginx workers would drop to nobody, who cannot reach fcgiwrap's socket.
NGINX_USER = "user root; " if os.geteuid() == 0 else ""


# ---------------------------------------------------------------- helpers

def log(*args):
    print(*args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not found"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))] if s else float("nan")


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid, limit=2.0):
    """The fd count once the client's closed connections have been reaped (bounded wait)."""
    deadline = time.monotonic() + limit
    last = proc_fds(pid)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = proc_fds(pid)
        if now == last:
            return now
        last = now
    return last


def children_of(pid, exclude_comm=("ember-spawner", "ember-zygote")):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid and fields[0] != "Z" and comm not in exclude_comm:
            out.append(int(name))
    return out


class Service:
    """A background process stopped at the end, with its output kept in a file."""

    def __init__(self, name, cmd, workdir, env=None):
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

    def wait_for(self, pattern, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log_path) as f:
                m = re.search(pattern, f.read())
            if m:
                return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with open(self.log_path) as f:
            raise RuntimeError(f"{self.proc.args[0]} did not print {pattern!r}:\n{f.read()[-2000:]}")

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Ember:
    def __init__(self, workdir, config=None):
        os.makedirs(workdir, exist_ok=True)
        self.state = os.path.join(workdir, "ember-state")
        cfg = os.path.join(workdir, "ember.json")
        with open(cfg, "w") as f:
            json.dump(config or {}, f)
        self.service = Service("emberd", [EMBERD, "--listen", "127.0.0.1:0", "--state-dir",
                                          self.state, "--socket", "", "--admin-token", TOKEN,
                                          "--config", cfg], workdir)
        m = self.service.wait_for(r"listening on http://127\.0\.0\.1:(\d+)")
        self.port = int(m.group(1))
        self.pid = self.service.proc.pid
        with open(self.service.log_path) as f:
            m = re.search(r"sandbox: (.*rlimits.*)", f.read())
        self.sandbox = m.group(1) if m else "unknown"

    def request(self, method, path, body=b"", admin=False, timeout=60):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        headers = {"Authorization": "Bearer " + TOKEN} if admin else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def deploy(self, name, runtime, manifest=None, source=None, files=None):
        """`files`: more files for the bundle, name -> text."""
        src, handler = (("hello.js", "hello.handler") if runtime == "node"
                        else ("hello.py", "hello.handler"))
        if source:
            src, handler = source, source.rsplit(".", 1)[0] + ".handler"
        m = {"runtime": runtime, "handler": handler}
        m.update(manifest or {})
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("function.json", json.dumps(m))
            with open(os.path.join(BENCH, "functions", src)) as f:
                z.writestr(src, f.read())
            for file_name, text in (files or {}).items():
                z.writestr(file_name, text)
        status, _, body = self.request("PUT", "/v1/functions/" + name, buf.getvalue(), admin=True)
        if status not in (200, 201):
            raise RuntimeError(f"deploy {name}: {status} {body[:300]}")

    def invoke(self, name, timeout=60):
        return self.request("POST", f"/v1/functions/{name}/invoke", EVENT, timeout=timeout)

    def first_byte(self, conn, name):
        """Invokes `name` on `conn`, an open keep-alive connection to the daemon: the time from
        sending the request to the first byte of the answer (ms), then status, headers, body."""
        request = (f"POST /v1/functions/{name}/invoke HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(EVENT)}\r\n\r\n"
                   ).encode() + EVENT
        t0 = time.perf_counter()
        conn.sendall(request)
        data = conn.recv(65536)
        ms = (time.perf_counter() - t0) * 1e3
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                raise RuntimeError(f"{name}: the connection closed mid-answer")
            data += more
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in
                   (line.split(":", 1) for line in lines[1:])}
        while len(body) < int(headers.get("content-length", "0")):
            body += conn.recv(65536)
        return ms, int(lines[0].split()[1]), headers, body

    def connect(self):
        conn = socket.create_connection(("127.0.0.1", self.port))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def wait_for_bytecode(self, timeout=30):
        """Until no python bundle is being compiled (after a deploy, docs/functions.md#python)."""
        deadline = time.time() + timeout
        while (metric(self, "ember_bytecode_compiles_running") or 0) > 0:
            if time.time() > deadline:
                raise RuntimeError("the bytecode compiler did not finish")
            time.sleep(0.01)

    def workers(self):
        return children_of(self.pid)

    def stop(self):
        self.service.stop()


def start_nginx(workdir, name, http):
    """nginx in the foreground, one worker, no access log, with `http` as its http block's
    body (upstreams and servers)."""
    conf = os.path.join(workdir, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""{NGINX_USER}worker_processes 1; daemon off; pid {workdir}/{name}.pid;
error_log {workdir}/{name}.err warn;
events {{ worker_connections 1024; }}
http {{ access_log off;
{http}}}
""")
    return Service(name, ["nginx", "-p", workdir, "-c", conf], workdir)


# ---------------------------------------------------------------- wrk

WRK_POST = """wrk.method = "POST"
wrk.body = '{"name":"bench"}'
wrk.headers["Content-Type"] = "application/json"
"""



def parse_wrk(text):
    def to_us(v):
        m = re.match(r"([\d.]+)(us|ms|s|m)", v)
        n, unit = float(m.group(1)), m.group(2)
        return n * {"us": 1, "ms": 1e3, "s": 1e6, "m": 6e7}[unit]

    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))}
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", text, re.M)
        out["p" + p] = to_us(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) requests in", text)
    out["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["errors"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    # wrk gives up on a response after 2 s and counts a "timeout": kept apart, since it is a
    # slow answer, not a failed one.
    out["timeouts"] = int(m.group(4)) if m else 0
    if m:
        out["errors"] += sum(int(x) for x in m.groups())
    return out


def errors_cell(r):
    """The errors of a wrk run for a table: how many, and how many were wrk's 2 s timeouts."""
    return f"{r['errors']} ({r['timeouts']} over 2 s)" if r.get("timeouts") else str(r["errors"])


def wrk(url, connections, seconds, workdir, script=WRK_POST, env=None):
    path = os.path.join(workdir, "wrk.lua")
    with open(path, "w") as f:
        f.write(script)
    threads = min(2, connections)
    text = run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                "--latency", "-s", path, url], env=env, timeout=seconds + 120)
    return parse_wrk(text)


# ---------------------------------------------------------------- scenarios

def scenario_warm(opts, workdir, report):
    """1. Warm throughput and latency against the direct servers and nginx in front of Node."""
    # Ember and its references take turns, several rounds, and each row is the median of its
    # rounds: this machine is shared, and a noisy minute then lands on every server alike.
    secs, rounds = (3, 1) if opts.quick else (5, 3)
    ember = Ember(workdir)
    runs = {}
    try:
        ember.deploy("hello-node", "node")
        ember.deploy("hello-python", "python")
        for name in ("hello-node", "hello-python"):
            for _ in range(3):
                assert ember.invoke(name)[0] == 200
        node_port, py_port, nginx_port = free_port(), free_port(), free_port()
        node = Service("direct-node", [NODE, os.path.join(BENCH, "servers", "direct.js"),
                                       str(node_port)], workdir, env=CLEAN_ENV)
        py = Service("direct-python", [PYTHON, os.path.join(BENCH, "servers", "direct.py"),
                                       str(py_port)], workdir, env=CLEAN_ENV)
        nginx = start_nginx(workdir, "nginx-proxy", f"""
  upstream node {{ server 127.0.0.1:{node_port}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nginx_port};
    location / {{ proxy_pass http://node; proxy_http_version 1.1;
                  proxy_set_header Connection ""; }} }}
""")
        try:
            node.wait_for(r"listening")
            py.wait_for(r"listening")
            wait_port(nginx_port)
            targets = [
                ("node", "Ember", f"http://127.0.0.1:{ember.port}/v1/functions/hello-node/invoke"),
                ("node", "direct (http.createServer)", f"http://127.0.0.1:{node_port}/"),
                ("node", "nginx → direct", f"http://127.0.0.1:{nginx_port}/"),
                ("python", "Ember",
                 f"http://127.0.0.1:{ember.port}/v1/functions/hello-python/invoke"),
                ("python", "direct (asyncio)", f"http://127.0.0.1:{py_port}/"),
            ]
            for conns in (1, 50):
                for round_ in range(rounds):
                    for runtime, what, url in targets:
                        log(f"warm: {runtime} {what} c{conns} round {round_ + 1}/{rounds}")
                        runs.setdefault((runtime, what, conns), []).append(
                            wrk(url, conns, secs, workdir))
        finally:
            for s in (nginx, node, py):
                s.stop()
    finally:
        ember.stop()

    rows = []
    for (runtime, what, conns), rs in runs.items():
        r = {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p90", "p99")}
        r["errors"] = sum(x["errors"] for x in rs)
        rows.append((runtime, what, conns, r))

    def find(runtime, what_prefix, conns):
        for rt, what, c, r in rows:
            if rt == runtime and what.startswith(what_prefix) and c == conns:
                return r
        return None

    lines = ["| runtime | server | connections | req/s | p50 µs | p90 µs | p99 µs | errors |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for rt, what, c, r in rows:
        lines.append(f"| {rt} | {what} | {c} | {r['rps']:.0f} | {r['p50']:.0f} | "
                     f"{r['p90']:.0f} | {r['p99']:.0f} | {r['errors']} |")
    ratios = ["", "| runtime | connections | Ember / direct req/s | Ember − direct p50 µs |",
              "|---|---:|---:|---:|"]
    for rt in ("node", "python"):
        for c in (1, 50):
            e, d = find(rt, "Ember", c), find(rt, "direct", c)
            ratios.append(f"| {rt} | {c} | {e['rps'] / d['rps']:.2f}× | "
                          f"{e['p50'] - d['p50']:+.0f} |")
            report.targets_warm[(rt, c)] = (e, d)
    report.section("1. Warm throughput and latency",
                   f"wrk, {rounds} round(s) of {secs} s per row with the servers taking "
                   f"turns, the median of the rounds shown; POST of `{EVENT.decode()}`; Ember "
                   "answers through "
                   "`/v1/functions/NAME/invoke` with the sandbox on.",
                   "\n".join(lines + ratios))


def metric(ember, name):
    """A value of /metrics, or None."""
    text = ember.request("GET", "/metrics")[2].decode()
    m = re.search("^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def wait_for_pool(ember, waiting, timeout=30):
    """Until `waiting` pre-initialised workers wait and none is starting."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (metric(ember, 'ember_pool_workers{state="waiting"}') or 0) >= waiting and \
                (metric(ember, 'ember_pool_workers{state="starting"}') or 0) == 0:
            return
        time.sleep(0.02)
    raise RuntimeError("the pool did not refill")


def scenario_cold(opts, workdir, report):
    """2. Cold start per runtime, pool off and on, against bare process start."""
    n = 5 if opts.quick else 30
    rows, breakdown, pool_memory = [], [], []
    # Three ways to start: a runtime started per worker (no pool, no zygote); python workers
    # forked from the python zygote, without a pool; and the pool of pre-initialised workers.
    for mode in ("off", "zygote", "on"):
        pooled = mode == "on"
        # One instance per first call, so that each cold start is one start; with the pool on,
        # each start finds a worker waiting (the pool refills between the calls, as it does
        # between cold starts that are not simultaneous).
        config = {"scheduler": {"eager_instances": 1},
                  "pool": {"max_per_flavour": 1, "min_per_flavour": 1} if pooled
                  else {"max_per_flavour": 0},
                  "python_zygote": mode != "off"}
        ember = Ember(os.path.join(workdir, f"cold-{mode}"), config)
        try:
            if pooled:
                wait_for_pool(ember, 2)
                for pid in ember.workers():
                    with open(f"/proc/{pid}/comm") as f:
                        pool_memory.append((f.read().strip(), proc_rss_kib(pid) / 1024))
            served_before = 0
            kinds = ("node", "python") if mode != "zygote" else ("python",)
            if pooled:
                kinds += ("python-module",)
            for kind in kinds:
                runtime = "node" if kind == "node" else "python"
                totals, inits = [], []
                for i in range(n):
                    name = f"cold-{kind}-{i}"
                    if kind == "python-module":
                        ember.deploy(name, runtime, source="imports.py",
                                     files={"lib2000.py": LARGE_MODULE})
                    else:
                        ember.deploy(name, runtime)
                    # A deploy is followed by its bytecode compile, which a first call that came
                    # this soon would share the CPUs with.
                    ember.wait_for_bytecode()
                    if pooled:
                        wait_for_pool(ember, 2)
                    conn = ember.connect()
                    try:
                        ms, status, headers, body = ember.first_byte(conn, name)
                    finally:
                        conn.close()
                    if status != 200 or headers.get("x-ember-start") != "cold":
                        raise RuntimeError(f"cold {name}: {status} {headers} {body[:200]}")
                    totals.append(ms)
                    inits.append(float(headers["x-ember-init-ms"]))
                served = (metric(ember, 'ember_pool_starts_total{result="hit"}') or 0) - served_before
                served_before += served
                rows.append((kind, mode, totals, inits, served))
        finally:
            ember.stop()
    refs = {}
    out = os.path.join(workdir, "hyperfine.json")
    # With the environment workers get (built from scratch): a variable such as
    # NODE_EXTRA_CA_CERTS in this shell would slow the reference, not Ember's workers.
    # A V8 startup snapshot holding the modules the shim loads: would it make node cheaper?
    snapshot_entry = os.path.join(workdir, "snapshot-entry.js")
    blob = os.path.join(workdir, "shim.blob")
    with open(snapshot_entry, "w") as f:
        f.write("for (const m of ['fs', 'net', 'path', 'module', 'url', 'util']) require(m);\n"
                "require('v8').startupSnapshot.setDeserializeMainFunction(() => {});\n")
    run([NODE, "--snapshot-blob", blob, "--build-snapshot", snapshot_entry], timeout=120,
        env=CLEAN_ENV)
    run(["hyperfine", "-N", "--warmup", "3", "--runs", str(n), "--export-json", out,
         f"{NODE} -e 0", f"{PYTHON} -I -c pass", f"{NODE} --snapshot-blob {blob}"],
        timeout=600, env=CLEAN_ENV)
    with open(out) as f:
        for r in json.load(f)["results"]:
            key = "snapshot" if "snapshot" in r["command"] else \
                "node" if "node" in r["command"] else "python"
            refs[key] = r
    sandbox = {}
    if os.access(SANDBOX_BENCH, os.X_OK):
        text = run([SANDBOX_BENCH, "50" if opts.quick else "200"], timeout=900)
        for line in text.splitlines():
            cells = [c.strip() for c in line.split("|")[1:-1]]
            if len(cells) == 5 and cells[1] == "`/usr/bin/true`":
                sandbox[cells[0]] = float(cells[2]) / 1000
    spawn_ms = sandbox.get("plain child (clone3, rlimits, fds)", float("nan"))
    full_ms = sandbox.get("+ a cgroup (create, limits, join, remove)", float("nan"))
    lines = ["| runtime | start | cold starts | served by the pool | first byte p50 ms | "
             "p99 ms | init p50 ms | bare process p50 ms (hyperfine) | Ember / bare p50 | "
             "Ember / bare p99 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"off": "runtime started", "zygote": "python zygote, pool off", "on": "pool on"}
    for kind, mode, totals, inits, hits in rows:
        runtime = "node" if kind == "node" else "python"
        bare = statistics.median(refs[runtime]["times"]) * 1e3
        shown = "python, a 2,000-line module" if kind == "python-module" else kind
        lines.append(f"| {shown} | {labels[mode]} | {n} | "
                     f"{int(hits) if mode == 'on' else ''} | {pct(totals, .5):.1f} | "
                     f"{pct(totals, .99):.1f} | {pct(inits, .5):.1f} | {bare:.1f} | "
                     f"{pct(totals, .5) / bare:.2f}× | {pct(totals, .99) / bare:.2f}× |")
        if mode == "on":
            if kind == runtime:
                report.targets_cold_pool[runtime] = (pct(totals, .5), pct(totals, .99), bare)
            continue
        if mode == "zygote":
            report.targets_cold_zygote[runtime] = (pct(totals, .5), pct(totals, .99), bare)
            continue
        report.targets_cold[runtime] = (pct(totals, .5), bare)
        shim = pct(inits, .5) - (full_ms - spawn_ms) - bare
        # The parts are timed apart on a noisy machine; a remainder below zero is noise.
        shim_text = f"{shim:.1f}" if shim >= 0 else f"≈ 0 ({shim:.1f}, within noise)"
        breakdown.append(f"| {runtime} | {full_ms - spawn_ms:.1f} | {bare:.1f} | {shim_text} | "
                         f"{pct(totals, .5) - pct(inits, .5):.1f} |")
    snap = statistics.median(refs["snapshot"]["times"]) * 1e3
    lines += ["", f"A V8 startup snapshot holding the modules the node shim loads "
              f"(`node --snapshot-blob`, built with `--build-snapshot`) starts in {snap:.1f} ms "
              f"p50, against {statistics.median(refs['node']['times']) * 1e3:.1f} ms for "
              "`node -e 0` in the same run.", "",
              "Memory of the pool's waiting workers right after start (RSS): " +
              ", ".join(f"{comm} {mib:.1f} MiB" for comm, mib in pool_memory) + "."]
    text = "\n".join(lines + [
        "", "Where the time of a cold start goes (p50, ms): the sandbox layers from "
        "`ember-bench-sandbox` (spawning `/usr/bin/true` with all layers minus a plain spawn), "
        "process creation and runtime start from hyperfine's bare process, the shim and "
        "handler load with the READY frame are what remains of Ember's init time, and the rest "
        "of the first response is scheduling, the INVOKE round trip and HTTP.", "",
        "| runtime | sandbox layers | bare process start | shim + handler load + READY | "
        "call + HTTP |", "|---|---:|---:|---:|---:|"] + breakdown)
    report.section("2. Cold start", f"{n} functions per runtime, each invoked once (so every "
                   "call is a cold start), sandbox on: first each worker starting its runtime "
                   "(pool and python zygote off), then python workers forked from the python "
                   "zygote with the pool off, then the pool of pre-initialised workers on (one "
                   "worker per runtime, refilled between the calls), with a python function whose "
                   "handler imports a 2,000-line module besides hello. Each call is timed from "
                   "sending the request on a connection opened before, to the first byte of the "
                   "answer; each deploy's bytecode compile has ended before its call. References: "
                   "`node -e 0` and `python3 -I -c pass` run by hyperfine in the same run.", text)


def burst(url, total, concurrency):
    def one(_):
        host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
        path = "/" + url.split("/", 3)[3]
        t0 = time.perf_counter()
        try:
            c = http.client.HTTPConnection(host, port, timeout=60)
            c.request("POST", path, body=EVENT, headers={"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            start = r.getheader("X-Ember-Start")
            c.close()
            return (time.perf_counter() - t0) * 1e3, r.status, start
        except OSError:
            return (time.perf_counter() - t0) * 1e3, 0, None

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(total)))


def burst_from_zero(workdir, pooled, total, conc, zygote=True):
    """One burst on a python function with no instance; the pool off, or on as configured by
    default (it keeps one worker per runtime from the start and grows with the starts); python
    workers forked from the python zygote, or each starting python3."""
    config = {} if pooled else {"pool": {"max_per_flavour": 0}}
    config["python_zygote"] = zygote
    ember = Ember(workdir, config)
    try:
        if pooled:
            wait_for_pool(ember, 2)
        ember.deploy("burst", "python", {"max_instances": 8})
        url = f"http://127.0.0.1:{ember.port}/v1/functions/burst/invoke"
        peak, seen = [0], set()
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                live = ember.workers()
                seen.update(live)
                peak[0] = max(peak[0], len(live))
                time.sleep(0.005)

        watcher = threading.Thread(target=watch)
        watcher.start()
        results = burst(url, total, conc)
        stop.set()
        watcher.join()
        seen.update(ember.workers())
        hits = metric(ember, 'ember_pool_starts_total{result="hit"}') or 0
        what = "Ember (python, max_instances 8, " + ("" if zygote else "no zygote, ") + \
            "pool " + (f"on: {int(hits)} starts served by it)" if pooled else "off)")
        # Processes seen include the pool's own waiting workers: count function instances only.
        return (what, results, None if pooled else len(seen), None if pooled else peak[0])
    finally:
        ember.stop()


def scenario_burst(opts, workdir, report):
    """3. Burst from zero against uWSGI in cheaper mode."""
    total, conc = (100, 25) if opts.quick else (200, 50)
    rows = []
    for pooled, zygote in ((False, False), (False, True), (True, True)):
        rows.append(burst_from_zero(os.path.join(workdir, f"burst-{pooled}-{zygote}"),
                                    pooled, total, conc, zygote))
    port = free_port()
    uwsgi = Service("uwsgi", ["uwsgi", "--plugin", "python3", "--http-socket", f"127.0.0.1:{port}",
                              "--wsgi-file", os.path.join(BENCH, "servers", "wsgi.py"),
                              "--master", "--processes", "8", "--cheaper", "1",
                              "--cheaper-initial", "1", "--cheaper-step", "1",
                              "--die-on-term", "--disable-logging"], workdir)
    try:
        wait_port(port)
        time.sleep(0.5)
        results = burst(f"http://127.0.0.1:{port}/", total, conc)
        rows.append(("uWSGI cheaper (1 → 8 workers)", results, None, None))
    finally:
        uwsgi.stop()
    lines = ["| server | calls | concurrency | errors | p50 ms | p90 ms | p99 ms | max ms | "
             "instances started | peak live |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for what, results, started, peak in rows:
        lat = [r[0] for r in results]
        errors = sum(1 for r in results if r[1] != 200)
        lines.append(f"| {what} | {total} | {conc} | {errors} | {pct(lat, .5):.1f} | "
                     f"{pct(lat, .9):.1f} | {pct(lat, .99):.1f} | {max(lat):.1f} | "
                     f"{'' if started is None else started} | {'' if peak is None else peak} |")
        if started is not None and report.targets_burst is None:
            report.targets_burst = (errors, started)
    report.section("3. Burst from zero", f"{total} calls, {conc} at a time, on a function with "
                   "no instance and `max_instances` 8; the reference is uWSGI spawning workers "
                   "under load (`--cheaper`) with the same Python handler.", "\n".join(lines))


def scenario_cgi(opts, workdir, report):
    """4. Fork per request: nginx + fcgiwrap running the handler as CGI."""
    secs = 3 if opts.quick else 10
    port = free_port()
    sock = os.path.join(workdir, "fcgiwrap.sock")
    fcgi = Service("fcgiwrap", ["fcgiwrap", "-c", "4", "-s", f"unix:{sock}"], workdir)
    nginx = start_nginx(workdir, "nginx-cgi", f"""
  server {{ listen 127.0.0.1:{port};
    location / {{ include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME {BENCH}/servers/cgi.py;
      fastcgi_pass unix:{sock}; }} }}
""")
    rows = []
    try:
        wait_port(port)
        for conns in (1, 50):
            log(f"cgi: c{conns}")
            rows.append((conns, wrk(f"http://127.0.0.1:{port}/", conns, secs, workdir)))
    finally:
        nginx.stop()
        fcgi.stop()
    lines = ["| server | connections | req/s | p50 µs | p99 µs | errors |",
             "|---|---:|---:|---:|---:|---:|"]
    for conns, r in rows:
        lines.append(f"| nginx + fcgiwrap + python3 CGI | {conns} | {r['rps']:.0f} | "
                     f"{r['p50']:.0f} | {r['p99']:.0f} | {r['errors']} |")
        warm = report.targets_warm.get(("python", conns))
        if warm:
            lines.append(f"| Ember warm (python, from scenario 1) | {conns} | "
                         f"{warm[0]['rps']:.0f} | {warm[0]['p50']:.0f} | {warm[0]['p99']:.0f} | "
                         f"{warm[0]['errors']} |")
    report.section("4. Fork per request", f"wrk, {secs} s per row: a new Python process per "
                   "request (CGI through fcgiwrap with 4 children behind nginx), against Ember's "
                   "warm pool.", "\n".join(lines))


def scenario_scale(opts, workdir, report):
    """5. Idle cost and scale: many functions, each invoked once, then idle."""
    total = 100 if opts.quick else 1000
    stages = [1, 10, 100] if opts.quick else [1, 100, 1000]
    secs = 2 if opts.quick else 5
    ember = Ember(workdir, {"scheduler": {"max_concurrent_starts": 4}})
    latency, deploy_s = [], 0.0
    try:
        rss0, fds0 = proc_rss_kib(ember.pid), proc_fds(ember.pid)
        deployed = 0
        for stage in stages:
            t0 = time.perf_counter()
            while deployed < stage:
                ember.deploy(f"f{deployed}", "node", {"idle_timeout_s": 1})
                deployed += 1
            deploy_s += time.perf_counter() - t0
            for _ in range(3):
                assert ember.invoke("f0")[0] == 200
            r = wrk(f"http://127.0.0.1:{ember.port}/v1/functions/f0/invoke", 1, secs, workdir)
            latency.append((stage, r))
        log(f"scale: invoking {total} functions once")
        t0 = time.perf_counter()
        errors = sum(1 for i in range(total) if ember.invoke(f"f{i}")[0] != 200)
        invoke_s = time.perf_counter() - t0
        deadline = time.time() + 30
        while ember.workers() and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(1)
        rss1, fds1, left = proc_rss_kib(ember.pid), proc_fds(ember.pid), len(ember.workers())
    finally:
        ember.stop()
    report.targets_idle = (left, rss1)
    lines = ["| measure | value |", "|---|---:|",
             f"| functions deployed | {total} |",
             f"| deploy rate | {total / deploy_s:.0f} /s |",
             f"| first invocations (cold, one after another) | {total / invoke_s:.1f} /s, "
             f"{errors} errors |",
             f"| workers left after the idle timeout | {left} |",
             f"| daemon RSS: fresh → {total} idle functions | {rss0 / 1024:.1f} → "
             f"{rss1 / 1024:.1f} MiB |",
             f"| daemon fds: fresh → {total} idle functions | {fds0} → {fds1} |",
             "", "| functions deployed | warm req/s (c1) | p50 µs | p99 µs |", "|---:|---:|---:|---:|"]
    for stage, r in latency:
        lines.append(f"| {stage} | {r['rps']:.0f} | {r['p50']:.0f} | {r['p99']:.0f} |")
    report.section("5. Idle cost and scale", f"{total} Node functions with `idle_timeout_s` 1, "
                   "each invoked once, then left idle; warm latency of one of them measured as "
                   "more are deployed.", "\n".join(lines))


def scenario_soak(opts, workdir, report):
    """6. Soak: many warm calls; RSS and fds at start and end."""
    calls = 50_000 if opts.quick else 1_000_000
    chunk, limit = (10, 300) if opts.quick else (60, 3600)
    ember = Ember(workdir)
    url = None
    try:
        ember.deploy("soak", "node", {"max_instances": 4})
        for _ in range(200):
            assert ember.invoke("soak")[0] == 200
        url = f"http://127.0.0.1:{ember.port}/v1/functions/soak/invoke"
        rss_fresh = proc_rss_kib(ember.pid)
        # One run at the soak's concurrency before the first reading: it starts the instances
        # and fills what is bounded by design (the usage batch of one flush interval, SQLite's
        # page cache, a malloc arena per thread), so the drift shows growth, not warm-up.
        wrk(url, 50, chunk, workdir)
        rss0, fds0 = proc_rss_kib(ember.pid), settled_fds(ember.pid)
        done, errors, p50s, p99s, rss_trend = 0, 0, [], [], []
        t0 = time.perf_counter()
        # wrk runs for a duration, not a count: run it in chunks until the count is reached.
        while done < calls and time.perf_counter() - t0 < limit:
            r = wrk(url, 50, chunk, workdir)
            done += r["requests"]
            errors += r["errors"]
            p50s.append(r["p50"])
            p99s.append(r["p99"])
            rss_trend.append(proc_rss_kib(ember.pid))
            log(f"soak: {done:,} calls")
        elapsed = time.perf_counter() - t0
        rss1, fds1 = proc_rss_kib(ember.pid), settled_fds(ember.pid)
    finally:
        ember.stop()
    drift = (rss1 - rss0) / rss0 * 100
    report.targets_soak = (errors, drift, done)
    trend = " → ".join(f"{v / 1024:.1f}" for v in rss_trend[:: max(1, len(rss_trend) // 8)])
    report.section("6. Soak", f"At least {calls:,} warm calls at 50 connections, in wrk runs of "
                   f"{chunk} s.", "\n".join([
                       "| measure | value |", "|---|---:|",
                       f"| calls | {done:,} in {elapsed:.0f} s ({done / elapsed:.0f}/s) |",
                       f"| errors | {errors} |",
                       f"| p50 (median of runs) / worst p99 | {statistics.median(p50s):.0f} / "
                       f"{max(p99s):.0f} µs |",
                       f"| daemon RSS before the warm-up run → start | {rss_fresh / 1024:.1f} → "
                       f"{rss0 / 1024:.1f} MiB |",
                       f"| daemon RSS start → end | {rss0 / 1024:.1f} → {rss1 / 1024:.1f} MiB "
                       f"({drift:+.1f}%) |",
                       f"| daemon RSS after each run (MiB, sampled) | {trend} |",
                       f"| daemon fds start → end | {fds0} → {fds1} |"]))


def scenario_kv(opts, workdir, report):
    """7. context.kv increments from inside functions against redis-server."""
    secs, ops_per_call, conns = (3, 50, 50) if opts.quick else (10, 50, 50)
    ember = Ember(workdir)
    lat, ops, elapsed, errors = [], 0, 0.0, 0
    try:
        # 50 calls in flight, each awaiting one increment at a time: 50 concurrent clients of
        # the store, as redis-benchmark -c 50 has. Two node processes, one per core.
        ember.deploy("kv", "node", {"concurrency": 25, "max_instances": 2, "min_instances": 2},
                     source="kv.js")
        assert ember.invoke("kv")[0] == 200
        body = json.dumps({"n": ops_per_call}).encode()
        lock = threading.Lock()
        deadline = time.time() + secs

        def client():
            nonlocal ops, errors
            c = http.client.HTTPConnection("127.0.0.1", ember.port, timeout=60)
            mine, n, bad = [], 0, 0
            while time.time() < deadline:
                c.request("POST", "/v1/functions/kv/invoke", body=body)
                r = c.getresponse()
                data = r.read()
                if r.status != 200:
                    bad += 1
                    continue
                got = json.loads(data)
                mine.extend(got)
                n += len(got)
            c.close()
            with lock:
                lat.extend(mine)
                ops += n
                errors += bad

        before = json.loads(ember.request("GET", "/v1/kv/kv/counter", admin=True)[2])["value"]
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        after = json.loads(ember.request("GET", "/v1/kv/kv/counter", admin=True)[2])["value"]
        # Every increment acknowledged is counted (a failed call may have made some too).
        assert after - before >= ops, f"counter moved {after - before}, {ops} increments made"
        metrics = ember.request("GET", "/metrics")[2].decode()
        writes = float(re.search(r"^ember_kv_writes_applied_total (\S+)", metrics, re.M).group(1))
        commits = float(re.search(r"^ember_kv_commits_total (\S+)", metrics, re.M).group(1))
    finally:
        ember.stop()
    rows = [("Ember `context.kv.incr` (node, inside the function)", "fsync per commit (group "
             "commit)", ops / elapsed, pct(lat, .5), pct(lat, .99), errors)]

    for fsync in ("everysec", "always"):
        port = free_port()
        redis = Service(f"redis-{fsync}", ["redis-server", "--port", str(port), "--bind",
                                           "127.0.0.1", "--save", "", "--appendonly", "yes",
                                           "--appendfsync", fsync, "--dir", workdir,
                                           "--appendfilename", f"{fsync}.aof"], workdir)
        try:
            redis.wait_for(r"Ready to accept connections")
            n = 100_000 if opts.quick else 400_000
            text = run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", "incr",
                        "-c", str(conns), "-n", str(n), "--csv"], timeout=600)
            row = [x.strip('"') for x in text.strip().splitlines()[-1].split(",")]
            # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms",
            # "p99_latency_ms","max_latency_ms"
            rows.append((f"redis-server `INCR` (redis-benchmark)", f"appendfsync {fsync}",
                         float(row[1]), float(row[4]) * 1000, float(row[6]) * 1000, 0))
        finally:
            redis.stop()
    lines = ["| store | durability | clients | ops/s | p50 µs | p99 µs | errors |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for what, durability, rate, p50, p99, bad in rows:
        lines.append(f"| {what} | {durability} | {conns} | {rate:.0f} | {p50:.0f} | {p99:.0f} | "
                     f"{bad} |")
    report.targets_kv = (rows[0][2], rows[1][2])
    report.section("7. Key-value increments", f"{conns} concurrent clients of one counter for "
                   f"{secs} s. Ember: {conns} calls in flight on two node instances "
                   f"(`concurrency` 25), each making {ops_per_call} `await context.kv.incr()` in "
                   "a row, timed inside the function; every increment is acknowledged only once "
                   "its commit is fsynced. The HTTP calls that carry them, and the Python client "
                   "making those calls, run on the same two cores. redis-server: `redis-benchmark -t incr` with "
                   f"`-c {conns}`, append-only file fsynced every second (a crash may lose the "
                   "last second) and at every write.",
                   "\n".join(lines) + f"\n\nEmber's group commit: {writes:.0f} writes in "
                   f"{commits:.0f} commits, {writes / max(commits, 1):.1f} writes per fsync.")


def scenario_events(opts, workdir, report):
    """8. Asynchronous events: how fast they are accepted, how soon they start."""
    secs, paced, rate = (3, 300, 100) if opts.quick else (10, 1000, 200)
    calls = 200 if opts.quick else 2000
    config = {"events": {"max_queued": 10_000_000, "max_queued_per_function": 10_000_000,
                         "max_queued_mb": 4096}}
    ember = Ember(workdir, config)
    try:
        ember.deploy("ev", "node", {"max_instances": 4}, source="ev.js")
        ember.deploy("relay", "node", {"calls": ["ev"]}, source="relay.js")
        assert ember.invoke("ev")[0] == 200
        # A synchronous call through another function (context.invoke), one at a time, against
        # the same call made directly; both warm.
        direct, relayed = [], []
        for _ in range(10):
            assert ember.invoke("relay")[0] == 200
        for _ in range(calls):
            for name, into in (("ev", direct), ("relay", relayed)):
                t = time.perf_counter()
                st, _, body = ember.invoke(name)
                into.append((time.perf_counter() - t) * 1e3)
                assert st == 200, (st, body)
        # Enqueue to start, on an idle daemon: events sent at a steady rate below what the
        # function can run, each one's start (in the handler) against its acceptance.
        ids = []
        t0 = time.perf_counter()
        for i in range(paced):
            st, _, body = ember.request("POST", "/v1/functions/ev/invoke?mode=async", b"{}")
            assert st == 202, (st, body)
            ids.append(json.loads(body)["id"])
            pause = t0 + (i + 1) / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        waits = []
        deadline = time.time() + 120
        for event_id in ids:
            while True:
                st, _, body = ember.request("GET", "/v1/invocations/" + event_id, admin=True)
                got = json.loads(body)
                if got.get("status") == "succeeded":
                    waits.append(got["result"]["started"] - got["created_ms"])
                    break
                assert time.time() < deadline, got
                time.sleep(0.05)
        # Acceptance: as many events as 50 connections can send in `secs`, each answered 202
        # only once it is committed (fsynced) to events.db; they run afterwards.
        accepted = wrk(f"http://127.0.0.1:{ember.port}/v1/functions/ev/invoke?mode=async", 50,
                       secs, workdir)
        metrics = ember.request("GET", "/metrics")[2].decode()
        refused = float(re.search(r'^ember_events_total\{event="refused"\} (\S+)', metrics,
                                  re.M).group(1))
    finally:
        ember.stop()
    lines = ["| measure | value |", "|---|---:|",
             f"| accepted events/s (50 connections, `?mode=async`, each 202 after its fsync) | "
             f"{accepted['rps']:.0f} |",
             f"| p50 / p99 of the 202 | {accepted['p50'] / 1000:.2f} / {accepted['p99'] / 1000:.2f} ms |",
             f"| events refused (queue full) | {refused:.0f} |",
             f"| enqueue → start p50 ({paced} events at {rate}/s) | {pct(waits, .5):.0f} ms |",
             f"| enqueue → start p99 | {pct(waits, .99):.0f} ms |",
             f"| enqueue → start max | {max(waits):.0f} ms |",
             f"| a call, direct: p50 / p99 ({calls} one at a time) | {pct(direct, .5):.2f} / "
             f"{pct(direct, .99):.2f} ms |",
             f"| the same call through `context.invoke` from another function: p50 / p99 | "
             f"{pct(relayed, .5):.2f} / {pct(relayed, .99):.2f} ms |"]
    report.section("8. Asynchronous events", "A node function (`max_instances` 4) that returns "
                   "`Date.now()`. Enqueue → start: events sent one by one at a steady rate on an "
                   "otherwise idle daemon; the wait is the handler's start minus the event's "
                   "`created_ms` (both wall clocks of this host, in ms). Acceptance: wrk with 50 "
                   f"connections for {secs} s; every 202 comes after the event's commit is "
                   "fsynced (group commit), and the events run afterwards. Function to function: "
                   "`relay` (node) returns `await context.invoke('ev', event)`; each call is timed "
                   "by the client, alternating with a direct call of `ev`.",
                   "\n".join(lines))


# ---------------------------------------------------------------- report

class Report:
    def __init__(self):
        self.sections = []
        self.targets_warm, self.targets_cold, self.targets_cold_pool = {}, {}, {}
        self.targets_cold_zygote = {}
        self.targets_burst = self.targets_idle = self.targets_soak = self.targets_kv = None

    def section(self, title, intro, body):
        self.sections.append(f"## {title}\n\n{intro}\n\n{body}\n")

    def targets(self):
        rows = ["| target (DESIGN §3) | measured | verdict |", "|---|---|---|"]

        def verdict(ok, miss):
            return "met" if ok else f"missed: {miss}"

        for rt in ("node", "python"):
            if (rt, 50) in self.targets_warm:
                e, d = self.targets_warm[(rt, 50)]
                ratio = e["rps"] / d["rps"]
                rows.append(f"| warm throughput at 50 connections ≥ 1.0× direct ({rt}) | "
                            f"{ratio:.2f}× | {verdict(ratio >= 1, f'{(1 - ratio) * 100:.0f}% short')} |")
            if (rt, 1) in self.targets_warm:
                e, d = self.targets_warm[(rt, 1)]
                added = e["p50"] - d["p50"]
                rows.append(f"| p50 added latency at 1 connection < 100 µs ({rt}) | {added:.0f} µs | "
                            f"{verdict(added < 100, f'{added - 100:.0f} µs over')} |")
        for rt, (cold, bare) in self.targets_cold.items():
            rows.append(f"| cold start below the bare runtime process ({rt}) | {cold:.1f} ms vs "
                        f"{bare:.1f} ms | {verdict(cold < bare, f'{cold / bare:.2f}× the bare start')} |")
        for what, targets in (("the pool", self.targets_cold_pool),
                              ("the python zygote, no pool", self.targets_cold_zygote)):
            for rt, (p50, p99, bare) in targets.items():
                r50, r99 = p50 / bare, p99 / bare
                rows.append(f"| cold start with {what} ≤ 0.1× the bare start p50, ≤ 0.3× p99 "
                            f"({rt}) | {r50:.2f}× / {r99:.2f}× ({p50:.1f} / {p99:.1f} ms vs "
                            f"{bare:.1f} ms) | "
                            f"{verdict(r50 <= 0.1 and r99 <= 0.3, f'{r50:.2f}× p50, {r99:.2f}× p99')} |")
        if self.targets_burst:
            errors, started = self.targets_burst
            rows.append(f"| burst from zero: 0 errors, ≤ 8 instances | {errors} errors, {started} "
                        f"started | {verdict(errors == 0 and started <= 8, 'see scenario 3')} |")
        if self.targets_idle:
            left, rss = self.targets_idle
            rows.append(f"| 0 workers when idle | {left} | {verdict(left == 0, f'{left} left')} |")
            rows.append(f"| idle functions < 64 MiB daemon RSS | {rss / 1024:.1f} MiB | "
                        f"{verdict(rss < 64 * 1024, f'{rss / 1024 - 64:.1f} MiB over')} |")
        if self.targets_soak:
            errors, drift, n = self.targets_soak
            rows.append(f"| soak: 0 errors, RSS drift < 5% | {errors} errors, {drift:+.1f}% over "
                        f"{n:,} calls | {verdict(errors == 0 and abs(drift) < 5, 'see scenario 6')} |")
        if self.targets_kv:
            ember, redis = self.targets_kv
            ratio = ember / redis
            rows.append(f"| kv incr ≥ 0.5× redis-server (appendfsync everysec) | {ratio:.2f}× "
                        f"({ember:.0f} vs {redis:.0f} ops/s) | "
                        f"{verdict(ratio >= 0.5, f'{(0.5 - ratio) * redis:.0f} ops/s short')} |")
        return "\n".join(rows)

    def write(self, path, opts, started, commit):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        cpu = "unknown"
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.*)", f.read())
            cpu = m.group(1) if m else cpu
        versions = {
            "emberd": version([EMBERD, "--version"]),
            "node": version([NODE, "--version"]),
            "python": version([PYTHON, "--version"]),
            "nginx": version(["nginx", "-v"]),
            "uwsgi": version(["uwsgi", "--version"]),
            "fcgiwrap": "Debian " + version(["dpkg-query", "-W", "-f=${Version}", "fcgiwrap"]),
            "wrk": version(["wrk", "-v"]),
            "hyperfine": version(["hyperfine", "--version"]),
            "redis-server": version(["redis-server", "--version"]),
        }
        head = [f"# Ember benchmark {started:%Y-%m-%d %H:%M} UTC, commit {commit}",
                "", f"Mode: {'quick (smoke test, numbers not judged)' if opts.quick else 'full'}. "
                f"Sandbox: {opts.sandbox}.", "",
                "## Machine", "", "| | |", "|---|---|",
                f"| CPU | {cpu}, {os.cpu_count()} cores |", f"| memory | {mem:.0f} GiB |",
                f"| kernel | {platform.release()} |",
                f"| OS | {version(['sh', '-c', '. /etc/os-release; echo $PRETTY_NAME'])} |"]
        head += [f"| {k} | {v} |" for k, v in versions.items()]
        text = "\n".join(head) + "\n\n## Targets\n\n" + self.targets() + "\n\n" + \
            "\n".join(self.sections)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        return text


# ---------------------------------------------------------------- scale-out

PG_BIN = "/usr/lib/postgresql/15/bin"
HAPROXY_CFG = os.path.join(ROOT, "packaging", "haproxy", "ember.cfg")


class Postgres:
    """A throwaway PostgreSQL 15 cluster on 127.0.0.1, run as the postgres user when root."""

    def __init__(self, workdir):
        self.dir = tempfile.mkdtemp(prefix="ember-bench-pg-")
        self.port = free_port()
        as_owner = []
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            as_owner = ["runuser", "-u", "postgres", "--"]
        self.as_owner = as_owner
        run(as_owner + [f"{PG_BIN}/initdb", "-D", f"{self.dir}/data", "-U", "ember",
                        "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8"])
        run(as_owner + [f"{PG_BIN}/pg_ctl", "-D", f"{self.dir}/data", "-l",
                        f"{self.dir}/server.log", "-w", "-o",
                        f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                        "-c max_connections=200", "start"])
        run(as_owner + [f"{PG_BIN}/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                        "ember", "ember"])
        self.conninfo = f"host=127.0.0.1 port={self.port} dbname=ember user=ember"

    def stop(self):
        subprocess.run(self.as_owner + [f"{PG_BIN}/pg_ctl", "-D", f"{self.dir}/data", "-m",
                                        "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def haproxy_config(port, node_ports):
    """The shipped configuration, on `port`, with the nodes of `node_ports` as its servers."""
    with open(HAPROXY_CFG) as f:
        cfg = f.read()
    cfg = cfg.replace("bind 127.0.0.1:8080", f"bind 127.0.0.1:{port}")
    cfg = cfg.replace("maxconn 20000", "maxconn 2000")
    cfg = cfg.replace("log stdout format raw local0 notice\n", "")
    servers = "".join(f"    server node{i} 127.0.0.1:{p} check\n" for i, p in enumerate(node_ports))
    return re.sub(r"(    server node\d 10\.0\.0\.\d+:8080 check\n)+", servers, cfg)


WRK_FUNCTIONS = """wrk.method = "POST"
wrk.body = '{"name":"bench"}'
wrk.headers["Content-Type"] = "application/json"
local i = 0
request = function()
  i = (i + 1) %% %d
  return wrk.format(nil, "/v1/functions/f" .. i .. "/invoke")
end
"""


def nginx_per_function(workdir, functions, conns, secs):
    """The reference of scenario 9: one Node HTTP server per function (each takes any number of
    calls at once) behind nginx, routed by path, under the load the nodes get."""
    ports = [free_port() for _ in range(functions)]
    servers = [Service(f"direct-node-f{i}", [NODE, os.path.join(BENCH, "servers", "direct.js"),
                                             str(p)], workdir, env=CLEAN_ENV)
               for i, p in enumerate(ports)]
    nginx = None
    try:
        for s in servers:
            s.wait_for(r"listening")
        port = free_port()
        upstreams = "".join(f"  upstream f{i} {{ server 127.0.0.1:{p}; keepalive 64; }}\n"
                            for i, p in enumerate(ports))
        locations = "".join(f"    location /v1/functions/f{i}/ {{ proxy_pass http://f{i}; "
                            "proxy_http_version 1.1; proxy_set_header Connection \"\"; }\n"
                            for i in range(functions))
        nginx = start_nginx(workdir, "nginx-functions", f"""
{upstreams}  server {{ listen 127.0.0.1:{port};
{locations}  }}
""")
        wait_port(port)
        url = f"http://127.0.0.1:{port}/"
        wrk(url, conns, 2, workdir, script=WRK_FUNCTIONS % functions)
        return wrk(url, conns, secs, workdir, script=WRK_FUNCTIONS % functions)
    finally:
        if nginx:
            nginx.stop()
        for s in servers:
            s.stop()


def scenario_cluster(opts, workdir, report):
    """9. Scale-out: throughput through HAProxy with 1, 2 and 3 nodes on one PostgreSQL."""
    if not (os.path.exists(f"{PG_BIN}/initdb") and shutil.which("haproxy")):
        log("cluster: PostgreSQL 15 or HAProxy missing (bench/setup installs them); skipped")
        return
    secs, conns, functions = (3, 24, 12) if opts.quick else (10, 48, 12)
    pg = Postgres(workdir)
    nodes, rows = [], []
    haproxy = None
    try:
        for n in (1, 2, 3):
            node = Ember(os.path.join(workdir, f"node{n}"),
                         {"storage": {"backend": "postgres", "postgres": pg.conninfo,
                                      "node": f"node{n}"}})
            nodes.append(node)
            if n == 1:
                for i in range(functions):
                    node.deploy(f"f{i}", "node")
            for i in range(functions):  # every node knows every function, and each is warm
                for _ in range(20):
                    status = node.invoke(f"f{i}")[0]
                    if status == 200:
                        break
                    time.sleep(0.05)
                assert status == 200, f"node{n} cannot call f{i}: {status}"
            if haproxy:
                haproxy.stop()
            port = free_port()
            cfg = os.path.join(workdir, f"haproxy-{n}.cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_config(port, [x.port for x in nodes]))
            haproxy = Service(f"haproxy-{n}", ["haproxy", "-db", "-f", cfg], workdir)
            wait_port(port)
            time.sleep(1.5)  # health checks pass (rise 2, every second)
            url = f"http://127.0.0.1:{port}/"
            for i in range(functions):  # warm the instances each node is routed
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("POST", f"/v1/functions/f{i}/invoke", EVENT)
                c.getresponse().read()
                c.close()
            log(f"cluster: {n} node(s) behind HAProxy, {functions} functions, c{conns}")
            # A first run starts the instances the load needs (more than one per function on
            # the node it lands on); the second is measured.
            wrk(url, conns, 2, workdir, script=WRK_FUNCTIONS % functions)
            through = wrk(url, conns, secs, workdir, script=WRK_FUNCTIONS % functions)
            direct = None
            if n == 1:
                direct = wrk(f"http://127.0.0.1:{node.port}/", conns, secs, workdir,
                             script=WRK_FUNCTIONS % functions)
            rows.append((n, through, direct))
        log(f"cluster: reference, {functions} Node servers behind nginx, c{conns}")
        reference = nginx_per_function(workdir, functions, conns, secs)
    finally:
        if haproxy:
            haproxy.stop()
        for node in nodes:
            node.stop()
        pg.stop()
    lines = ["| nodes | path | req/s | p50 µs | p99 µs | errors |", "|---:|---|---:|---:|---:|---:|"]
    for n, through, direct in rows:
        if direct:
            lines.append(f"| 1 | direct to the node | {direct['rps']:.0f} | {direct['p50']:.0f} | "
                         f"{direct['p99']:.0f} | {errors_cell(direct)} |")
        lines.append(f"| {n} | through HAProxy | {through['rps']:.0f} | {through['p50']:.0f} | "
                     f"{through['p99']:.0f} | {errors_cell(through)} |")
    lines.append(f"| – | reference: {functions} Node servers behind nginx | "
                 f"{reference['rps']:.0f} | {reference['p50']:.0f} | {reference['p99']:.0f} | "
                 f"{errors_cell(reference)} |")
    report.section(
        "9. Scale-out", f"{functions} warm Node functions, {conns} connections cycling over them "
        "(`/v1/functions/fN/invoke`), through HAProxy with `packaging/haproxy/ember.cfg` in front "
        "of 1, 2 and 3 nodes sharing one PostgreSQL 15. Every node runs on this one machine, so "
        "they share its CPUs: the rows show what routing costs and that calls spread, not the "
        "throughput of separate machines. The reference runs one Node HTTP server per function "
        "behind nginx: a process that takes any number of calls at once, where an Ember "
        "instance takes one (concurrency 1, as on Lambda), so the node runs three to four "
        "instances per function here and this machine pays for every switch between "
        "processes.", "\n".join(lines))


SCENARIOS = {"warm": scenario_warm, "cold": scenario_cold, "burst": scenario_burst,
             "cgi": scenario_cgi, "scale": scenario_scale, "soak": scenario_soak,
             "kv": scenario_kv, "events": scenario_events, "cluster": scenario_cluster}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a few minutes: a smoke test")
    ap.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    ap.add_argument("--out", help="report path (default bench/results/DATE-COMMIT.md)")
    opts = ap.parse_args()
    started = datetime.datetime.utcnow()
    commit = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]).strip()
    out = opts.out or os.path.join(BENCH, "results", f"{started:%Y-%m-%d}-{commit}"
                                   f"{'-quick' if opts.quick else ''}.md")
    report = Report()
    workdir = tempfile.mkdtemp(prefix="ember-bench-")
    try:
        probe = Ember(workdir)
        opts.sandbox = probe.sandbox
        probe.stop()
        shutil.rmtree(probe.state, ignore_errors=True)
        for name in opts.only.split(","):
            log(f"== scenario {name}")
            sub = os.path.join(workdir, name)
            os.makedirs(sub)
            SCENARIOS[name](opts, sub, report)
    finally:
        text = report.write(out, opts, started, commit)
        shutil.rmtree(workdir, ignore_errors=True)
    print(text)
    log(f"report: {out}")


if __name__ == "__main__":
    main()
