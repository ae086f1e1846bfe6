#!/usr/bin/python3
"""Cold starts through the real daemon: deploys N copies of a hello function per runtime, invokes
each once (so every call is a cold start), and prints p50/p90/max of the time to the response and
of X-Ember-Init-Ms as a markdown table. Talks only to 127.0.0.1; bounded by N and a timeout.

  bench/cold_start.py EMBERD [N] [extra emberd flags...]
"""
import http.client
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

HANDLERS = {
    "node": ("index.js", "index.handler",
             "exports.handler = async (e) => ({ hello: e.name || 'world' });\n"),
    "python": ("main.py", "main.handler",
               "def handler(event, context):\n    return {'hello': event.get('name', 'world')}\n"),
}


def bundle(runtime):
    name, handler, code = HANDLERS[runtime]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("function.json", json.dumps({"runtime": runtime, "handler": handler}))
        z.writestr(name, code)
    return buf.getvalue()


def request(port, method, path, body=b"", token=None):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": "Bearer " + token} if token else {}
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict(r.getheaders()), data


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(p * len(s)))]


def main():
    emberd = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    extra = sys.argv[3:]
    state = tempfile.mkdtemp(prefix="ember-bench-")
    token = "bench-token-0123456789abcdef"
    proc = subprocess.Popen([emberd, "--listen", "127.0.0.1:0", "--state-dir", state,
                             "--socket", "", "--admin-token", token] + extra,
                            stderr=subprocess.PIPE, text=True)
    port = None
    try:
        deadline = time.time() + 30
        log = []
        while port is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
        if port is None:
            sys.exit("emberd did not start:\n" + "".join(log))
        # Keep reading its log, so a full pipe never stalls the daemon.
        threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
        print("| runtime | cold starts | response p50 ms | p90 | max | init p50 ms | p90 | max |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for runtime in HANDLERS:
            if runtime == "python" and not os.access("/usr/bin/python3", os.X_OK):
                continue
            data = bundle(runtime)
            totals, inits = [], []
            for i in range(n):
                name = f"cold-{runtime}-{i}"
                status, _, body = request(port, "PUT", "/v1/functions/" + name, data, token)
                assert status in (200, 201), body
                t0 = time.perf_counter()
                status, headers, body = request(port, "POST", f"/v1/functions/{name}/invoke",
                                                b'{"name":"bench"}')
                t1 = time.perf_counter()
                assert status == 200, body
                assert headers.get("X-Ember-Start") == "cold", headers
                totals.append((t1 - t0) * 1000)
                inits.append(float(headers["X-Ember-Init-Ms"]))
            print(f"| {runtime} | {n} | {pct(totals, .5):.1f} | {pct(totals, .9):.1f} | "
                  f"{max(totals):.1f} | {pct(inits, .5):.1f} | {pct(inits, .9):.1f} | "
                  f"{max(inits):.1f} |")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
