#!/usr/bin/python3
"""Writes the seed corpora of fuzz/corpus/<target>/ (committed; run again after changing it).

Each seed is a valid or nearly valid input of its target, so that fuzzing starts from the shapes
Ember really receives. Targets that read their input through libFuzzer's FuzzedDataProvider get
seeds in its layout: strings from the front (ConsumeRandomLengthString ends one at a backslash
followed by another character; a doubled backslash is one backslash), integers and booleans from
the back."""
import base64
import gzip
import io
import json
import os
import shutil
import struct
import sys
import tarfile
import warnings
import zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
TOKEN = "fuzz-admin-token"


def fdp_string(text):
    """A string as ConsumeRandomLengthString reads it, ended."""
    if isinstance(text, str):
        text = text.encode()
    return text.replace(b"\\", b"\\\\") + b"\\\n"


def write(target, name, data):
    os.makedirs(os.path.join(ROOT, target), exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(ROOT, target, name), "wb") as f:
        f.write(data)


# Bundles -------------------------------------------------------------------------------------

def zip_bundle(files, symlinks=()):
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w") as z:
        warnings.simplefilter("ignore")  # a duplicate entry is one of the seeds
        for name, content in files:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = (0o100644 if not name.endswith("/") else 0o040755) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, content)
        for name, target in symlinks:
            info = zipfile.ZipInfo(name, date_time=(2026, 1, 1, 0, 0, 0))
            info.external_attr = 0o120777 << 16
            z.writestr(info, target)
    return buf.getvalue()


def tar_bundle(entries):
    """entries: (name, kind, content) with kind file, dir, symlink, hardlink."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, content in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1767225600
            if kind == "file":
                data = content.encode() if isinstance(content, str) else content
                info.size = len(data)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, content
            elif kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, content
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            t.addfile(info)
    return gzip.compress(raw.getvalue(), mtime=0)


MANIFEST_NODE = json.dumps({"runtime": "node", "handler": "index.handler"})
MANIFEST_PY = json.dumps({"runtime": "python", "handler": "main.handler", "memory_mb": 256,
                          "env": {"GREETING": "hi"}, "schedule": ["rate(5 minutes)"]})
NODE_BUNDLE = zip_bundle([("function.json", MANIFEST_NODE),
                          ("index.js", "exports.handler = async (e) => e;\n")])
PY_BUNDLE = tar_bundle([("function.json", "file", MANIFEST_PY), ("lib", "dir", None),
                        ("lib/util.py", "file", "X = 1\n"),
                        ("main.py", "file", "def handler(e, c):\n    return e\n")])

BUNDLES = {
    "node.zip": NODE_BUNDLE,
    "python.tar.gz": PY_BUNDLE,
    "zip-dirs-symlink.zip": zip_bundle([("a/", ""), ("a/b/", ""), ("a/b/c.txt", "c")],
                                       symlinks=[("a/link", "b/c.txt")]),
    "zip-escape.zip": zip_bundle([("../evil.txt", "x")]),
    "zip-duplicate.zip": zip_bundle([("x.txt", "one"), ("x.txt", "two")]),
    "zip-symlink-out.zip": zip_bundle([], symlinks=[("out", "../../etc/passwd")]),
    "zip-bomb.zip": zip_bundle([("zeros", b"\0" * (4 << 20))]),
    "tar-hardlink.tar.gz": tar_bundle([("a.txt", "file", "a"), ("b.txt", "hardlink", "a.txt")]),
    "tar-hardlink-out.tar.gz": tar_bundle([("b.txt", "hardlink", "/etc/passwd")]),
    "tar-symlink-then-write.tar.gz": tar_bundle([("d", "symlink", "/tmp"),
                                                 ("d/x.txt", "file", "x")]),
    "tar-fifo.tar.gz": tar_bundle([("f", "fifo", None)]),
    "tar-deep.tar.gz": tar_bundle([("/".join(["d"] * 60) + "/x", "file", "x")]),
    "tar-absolute.tar.gz": tar_bundle([("/abs.txt", "file", "x")]),
}


def bundle_seeds():
    for name, data in BUNDLES.items():
        # bundle.cc: the content type's index is the last byte; the archive is the rest.
        write("bundle", name, data + b"\0")


# HTTP ----------------------------------------------------------------------------------------

def request(method, target, body=b"", headers=(), auth=True):
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    if auth:
        lines.append(f"Authorization: Bearer {TOKEN}")
    lines += list(headers)
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def http_seeds():
    seeds = {
        "healthz": request("GET", "/healthz", auth=False),
        "readyz-keepalive": request("GET", "/readyz", auth=False) * 2,
        "list": request("GET", "/v1/functions?limit=2"),
        "deploy-zip": request("PUT", "/v1/functions/hello", NODE_BUNDLE,
                              ["Content-Type: application/zip"]),
        "deploy-tgz-query": request("PUT", "/v1/functions/hello-py?memory_mb=256&timeout_ms=900",
                                    PY_BUNDLE),
        "deploy-then-get": request("PUT", "/v1/functions/a", NODE_BUNDLE)
        + request("GET", "/v1/functions/a") + request("GET", "/v1/functions/a/logs?limit=5"),
        "patch": request("PUT", "/v1/functions/p", NODE_BUNDLE)
        + request("PATCH", "/v1/functions/p", json.dumps({"memory_mb": 512, "env": {"A": "b"}}))
        + request("POST", "/v1/functions/p/rollback?to=1"),
        "aliases": request("PUT", "/v1/functions/al", NODE_BUNDLE)
        + request("POST", "/v1/functions/al/aliases",
                  json.dumps({"name": "live", "version": 1}))
        + request("PUT", "/v1/functions/al/aliases/live",
                  json.dumps({"version": 1, "routing": {"1": 0.5}}))
        + request("GET", "/v1/functions/al/aliases")
        + request("DELETE", "/v1/functions/al/aliases/live"),
        "keys": request("PUT", "/v1/functions/k", NODE_BUNDLE)
        + request("POST", "/v1/functions/k/keys") + request("GET", "/v1/functions/k/keys"),
        "delete": request("PUT", "/v1/functions/d", NODE_BUNDLE)
        + request("DELETE", "/v1/functions/d"),
        "invoke": request("POST", "/v1/functions/hello/invoke", '{"name":"x"}', auth=False),
        "invoke-async": request("POST", "/v1/functions/hello/invoke?mode=async", "{}"),
        "trigger": request("GET", "/fn/hello/some/path?q=1", auth=False,
                           headers=["Cookie: a=b", "Accept: */*"]),
        "kv": request("PUT", "/v1/kv/ns/key?ttl_s=60", '{"a": 1}')
        + request("GET", "/v1/kv/ns/key") + request("GET", "/v1/kv/ns?prefix=k&limit=10")
        + request("DELETE", "/v1/kv/ns/key"),
        "usage": request("GET", "/v1/usage?from=0&to=9999999999999&function=hello")
        + request("GET", "/v1/functions/hello/usage?limit=3"),
        "events": request("GET", "/v1/invocations/0123456789abcdef")
        + request("GET", "/v1/functions/hello/dead-letters?limit=2")
        + request("POST", "/v1/functions/hello/dead-letters/redrive", '{"ids": ["1"]}'),
        "metrics": request("GET", "/metrics"),
        "console": request("GET", "/console/", auth=False, headers=['If-None-Match: "x"']),
        "lambda-create": request("POST", "/2015-03-31/functions", json.dumps({
            "FunctionName": "lam", "Runtime": "nodejs20.x", "Handler": "index.handler",
            "Role": "arn:aws:iam::000000000000:role/x", "MemorySize": 256, "Timeout": 5,
            "Environment": {"Variables": {"A": "1"}},
            "Code": {"ZipFile": base64.b64encode(NODE_BUNDLE).decode()}}),
            ["Content-Type: application/json"])
        + request("GET", "/2015-03-31/functions/lam")
        + request("GET", "/2015-03-31/functions?MaxItems=1")
        + request("POST", "/2015-03-31/functions/lam/versions", "{}")
        + request("POST", "/2015-03-31/functions/lam/aliases",
                  json.dumps({"Name": "live", "FunctionVersion": "1"}))
        + request("PUT", "/2015-03-31/functions/lam/code",
                  json.dumps({"ZipFile": base64.b64encode(NODE_BUNDLE).decode()}))
        + request("DELETE", "/2015-03-31/functions/lam"),
        "lambda-invoke-sigv4": request(
            "POST", "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000"
            "%3Afunction%3Ahello%3Alive/invocations?Qualifier=1", '{"a":1}', auth=False,
            headers=["X-Amz-Date: 20261207T080000Z", "X-Amz-Invocation-Type: Event",
                     "X-Amz-Log-Type: Tail",
                     "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEMBER000000000000/20261207/"
                     "us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature="
                     + "0" * 64]),
        "chunked": b"PUT /v1/functions/c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n" % len(NODE_BUNDLE) + NODE_BUNDLE + b"\r\n0\r\n\r\n",
        "smuggle": b"POST /v1/functions/hello/invoke HTTP/1.1\r\nHost: x\r\nContent-Length: 4"
        b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bad-utf8-name": request("PUT", "/v1/functions/h%C3%28llo", NODE_BUNDLE),
        "bad-json": request("PATCH", "/v1/functions/hello", '{"memory_mb": "\xff"'),
        "http10": b"GET /healthz HTTP/1.0\r\n\r\n",
        "expect-continue": request("PUT", "/v1/functions/e", NODE_BUNDLE,
                                   ["Expect: 100-continue"]),
        "obs-fold": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
        # Nested past the 1,000 levels Ember reads: refused, never built.
        "deep-json": request("PUT", "/v1/kv/ns/deep", "[" * 1200 + "]" * 1200)
        + request("PATCH", "/v1/functions/hello", '{"env": ' + "[" * 1200 + "]" * 1200 + "}")
        + request("POST", "/v1/functions/hello/invoke", "[" * 1200 + "]" * 1200),
    }
    for name, data in seeds.items():
        write("http_request", name, data)


# Worker frames -------------------------------------------------------------------------------

def frame(kind, ident, meta, body=b""):
    meta = json.dumps(meta).encode() if not isinstance(meta, bytes) else meta
    return struct.pack("<IIII", kind, ident, len(meta), len(body)) + meta + body


def frame_seeds():
    # worker_frames.cc: each piece's size is read from the back, the bytes from the front.
    stream = (frame(1, 0, {}) + frame(4, 1, {}, b'{"ok":true}')
              + frame(6, 7, {"op": "get", "call": 1, "key": "k"})
              + frame(10, 8, {"call": 1, "target": "other", "async": False}, b"{}")
              + frame(5, 2, {}, b'{"errorType":"E","errorMessage":"m"}'))
    # Piece sizes are one byte each, read from the back (1 + byte % 256); the stream from the
    # front.
    write("worker_frames", "stream", stream + bytes([6, 2, 199, 0, 255]))
    write("worker_frames", "unknown-type", frame(99, 0, {}) + bytes([15]))
    write("worker_frames", "huge-meta", struct.pack("<IIII", 4, 1, 1 << 20, 0) + bytes([15]))
    write("worker_frames", "partial", frame(4, 1, {}, b"x" * 100)[:40] + bytes([39]))


# KV requests ---------------------------------------------------------------------------------

def kv_seeds():
    # kv_request.cc: from the back, the boolean (one byte) and the operation count (two bytes,
    # the first read the high one); from the front, meta then body.
    requests = {
        "put": ({"op": "put", "call": 1, "key": "user/42", "ttl_s": 60}, b'{"n": 1}'),
        "put-if-version": ({"op": "put", "call": 1, "ns": "team", "key": "k", "if_version": 3},
                           b"[1,2]"),
        "get-shared": ({"op": "get", "call": 1, "ns": "shared", "key": "k"}, b""),
        "put-read-only": ({"op": "put", "call": 1, "ns": "shared", "key": "k"}, b"1"),
        "incr": ({"op": "incr", "call": 1, "key": "count", "delta": -5}, b""),
        "delete": ({"op": "delete", "call": 1, "key": "user/42"}, b""),
        "list": ({"op": "list", "call": 1, "prefix": "user/", "limit": 5, "cursor": "user/1"},
                 b""),
        "not-granted": ({"op": "get", "call": 1, "ns": "secret", "key": "k"}, b""),
        "bad-value": ({"op": "put", "call": 1, "key": "k"}, b"{not json"),
        "deep-value": ({"op": "put", "call": 1, "key": "k"}, b"[" * 1200 + b"]" * 1200),
    }
    for name, (meta, body) in requests.items():
        write("kv_request", name, fdp_string(json.dumps(meta)) + body + bytes([5, 0, 1]))


# Manifests, schedules, config ----------------------------------------------------------------

def manifest_seeds():
    manifests = {
        "node": MANIFEST_NODE,
        "python": MANIFEST_PY,
        "full": json.dumps({
            "runtime": "provided", "handler": "bootstrap", "memory_mb": 1024, "timeout_ms": 900000,
            "max_instances": 50, "min_instances": 1, "idle_timeout_s": 300,
            "keep_alive": "hybrid", "concurrency": 4, "tmp_mb": 512, "network": "host",
            "auth": "token", "env": {"A": "1", "B": ""}, "kv_shared": {"other": "rw"},
            "async_retries": 0, "async_max_age_s": 60, "async_on_failure": "function:dlq-fn",
            "schedule": ["cron(0 3 * * ? *)", "rate(1 second)"], "calls": ["*"]}),
    }
    patch = json.dumps({"memory_mb": 512, "env": {"C": "3"}, "calls": ["a", "b"]})
    for name, manifest in manifests.items():
        write("manifest", name, fdp_string(manifest) + patch.encode() + bytes([0]))
    query = b"".join(fdp_string(x) for x in
                     ["runtime", "python", "memory_mb", "256", "handler", "main.handler",
                      "env.A", "b"])
    write("manifest", "query", query + bytes([1]))
    for i, expr in enumerate(["rate(5 minutes)", "cron(0/15 8-17 ? * MON-FRI *)",
                              "cron(0 0 L * ? 2027)", "cron(30 12 29 2 ? *)",
                              "rate(1 second)"]):
        # The start, seconds since the epoch, is four bytes read from the back.
        write("manifest", f"schedule-{i}", expr.encode() + struct.pack("<I", 1796630400)
              + bytes([2]))
    write("manifest", "name", b"hello-world-1" + bytes([3]))


def config_seeds():
    config = json.dumps({
        "listen": "127.0.0.1:8080", "socket": "/run/ember/ember.sock", "log_level": "debug",
        "http": {"max_connections": 100, "header_timeout_ms": 5000},
        "bundles": {"max_compressed_bytes": 1000000},
        "scheduler": {"eager_instances": 1}, "pool": {"max_per_flavour": 2},
        "kv": {"max_value_bytes": 1000}, "events": {"max_queued": 100},
        "sandbox": {"max_pids": 64}, "metering": {"flush_interval_ms": 100}})
    write("config", "file", config.encode() + bytes([0]))
    args = b"".join(fdp_string(x) for x in ["--listen", "0.0.0.0:9000", "--state-dir",
                                            "/var/lib/ember", "--insecure", "--check-config"])
    write("config", "args", args + bytes([1]))
    for i, listen in enumerate(["127.0.0.1:0", "[::1]:8080", "localhost:80", "unix:/x"]):
        write("config", f"listen-{i}", listen.encode() + bytes([2]))


def sigv4_seeds():
    header = ("AWS4-HMAC-SHA256 Credential=AKIAEMBER000000000000/20261207/us-east-1/lambda/"
              "aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
              + "a" * 64)
    data = (fdp_string(header) + fdp_string("POST")
            + fdp_string("/2015-03-31/functions/hello/invocations?Qualifier=%24LATEST")
            + fdp_string("20261207T080000Z") + fdp_string("host") + fdp_string("127.0.0.1:8080")
            + fdp_string("x-amz-content-sha256") + fdp_string("UNSIGNED-PAYLOAD")
            + b'{"a": 1}' + bytes([2]))
    write("sigv4", "invoke", data)


def main():
    if os.path.isdir(ROOT):
        shutil.rmtree(ROOT)
    bundle_seeds()
    http_seeds()
    frame_seeds()
    kv_seeds()
    manifest_seeds()
    config_seeds()
    sigv4_seeds()
    return 0


if __name__ == "__main__":
    sys.exit(main())
