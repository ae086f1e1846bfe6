"""Ember's Python runtime shim.

Loads the function's handler, then serves invocations over the frames of
docs/worker-protocol.md on fd 3. stdout and stderr are the function's own.

It imports only what every call needs: the channel is read and written with os
calls rather than the socket module. A handler's error is reported even when the
handler used up its descriptors, its memory or its recursion depth: the stack is
formatted here without importing anything, memory is held in reserve for it, and
a last-resort frame is built at start and sent without allocating.
"""

import _thread
import json
import mmap
import os
import struct
import sys
import time

READY, INIT_ERROR, INVOKE, RESULT, ERROR, KV_REQUEST, KV_REPLY, SHUTDOWN = 1, 2, 3, 4, 5, 6, 7, 8
HEADER = struct.Struct("<IIII")
MAX_META = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
READ_SIZE = 64 * 1024


class KvError(Exception):
    """A key-value operation failed; the class of each error is named by its type
    (KvKeyTooLarge, KvQuotaExceeded, ...: docs/kv.md), and all derive from this one."""

    error_type = "KvError"


_KV_ERRORS = {}


def _kv_error(error_type, message):
    cls = _KV_ERRORS.get(error_type)
    if cls is None:
        cls = type(str(error_type), (KvError,), {"error_type": error_type})
        _KV_ERRORS[error_type] = cls
    return cls(message)


class Kv:
    """`context.kv`: the function's key-value namespace, or one it was granted (namespace()).
    Every call blocks until the daemon has answered; a write has been made durable by then."""

    KvError = KvError

    def __init__(self, channel, call, ns=None):
        self._channel, self._call, self._ns = channel, call, ns

    def _request(self, op, fields, body=b""):
        meta = {"op": op, "call": self._call}
        meta.update(fields)
        if self._ns is not None:
            meta["ns"] = self._ns
        reply, body = self._channel.kv_request(meta, body)
        if not reply.get("ok"):
            raise _kv_error(reply.get("errorType", "KvUnavailable"), reply.get("errorMessage", ""))
        return reply, body

    @staticmethod
    def _key(key):
        if not isinstance(key, str):
            raise _kv_error("KvInvalidKey", "a key must be a string")
        return key

    def get_with_version(self, key):
        reply, body = self._request("get", {"key": self._key(key)})
        if not reply.get("found"):
            return None
        return {"value": json.loads(body), "version": reply["version"]}

    def get(self, key):
        item = self.get_with_version(key)
        return None if item is None else item["value"]

    def put(self, key, value, ttl_s=None, if_version=None):
        fields = {"key": self._key(key)}
        if ttl_s is not None:
            fields["ttl_s"] = ttl_s
        if if_version is not None:
            fields["if_version"] = if_version
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
        except (TypeError, ValueError) as exc:
            raise _kv_error("KvInvalidValue", f"the value cannot be written as JSON: {exc}") from None
        return self._request("put", fields, text)[0]["version"]

    def incr(self, key, delta=1):
        if not isinstance(delta, int) or isinstance(delta, bool):
            raise _kv_error("KvInvalidRequest", "delta must be an integer")
        return self._request("incr", {"key": self._key(key), "delta": delta})[0]["value"]

    def delete(self, key):
        return self._request("delete", {"key": self._key(key)})[0]["deleted"]

    def list(self, prefix="", limit=None, cursor=None):
        if not isinstance(prefix, str):
            raise _kv_error("KvInvalidRequest", "a prefix must be a string")
        fields = {"prefix": prefix}
        if limit is not None:
            fields["limit"] = limit
        if cursor:
            fields["cursor"] = cursor
        reply, body = self._request("list", fields)
        return {"items": json.loads(body), "cursor": reply.get("cursor") or None}

    def namespace(self, name):
        return Kv(self._channel, self._call, str(name))


class Context:
    """What a handler gets as `context`: Lambda's Python names, plus Ember's camelCase ones."""

    def __init__(self, meta, channel=None, call=0):
        self.kv = Kv(channel, call)
        self.aws_request_id = self.request_id = self.requestId = meta.get("requestId", "")
        self.function_name = self.functionName = os.environ.get("EMBER_FUNCTION_NAME", "")
        self.function_version = self.functionVersion = os.environ.get("EMBER_FUNCTION_VERSION", "")
        memory = int(os.environ.get("EMBER_MEMORY_MB", "0"))
        self.memory_limit_in_mb = self.memoryLimitMB = memory
        self._deadline_ms = meta.get("deadlineMs", 0)

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    getRemainingTimeInMillis = get_remaining_time_in_millis


# Address space held back while a handler runs and given up when it fails, so that a handler that
# ran into its memory limit (RLIMIT_AS or RLIMIT_DATA) leaves room to describe its error. Untouched,
# it costs no resident memory.
RESERVE_BYTES = 4 << 20
BOOTSTRAP = os.path.abspath(__file__)
SOURCE_CACHE = {}  # file name -> its lines, for stack entries
RECURSION_LIMIT = sys.getrecursionlimit()


def _reserve():
    try:
        return mmap.mmap(-1, RESERVE_BYTES)
    except (OSError, MemoryError):
        return None


def _source_line(filename, lineno):
    lines = SOURCE_CACHE.get(filename)
    if lines is None:
        try:
            with open(filename, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:  # out of descriptors, or no such file: the entry goes without its line
            return ""
        SOURCE_CACHE[filename] = lines
    return lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""


def _stack(tb):
    """The stack as Lambda's Python runtime lists it, from the handler down; runs of one
    repeated entry (deep recursion) are folded as traceback does."""
    out = []
    last, repeats = None, 0
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_filename != BOOTSTRAP:
            entry = f'  File "{code.co_filename}", line {tb.tb_lineno}, in {code.co_name}\n'
            line = _source_line(code.co_filename, tb.tb_lineno)
            if line:
                entry += f"    {line}\n"
            if entry == last:
                repeats += 1
            else:
                if repeats > 2:
                    out.append(f"  [Previous line repeated {repeats - 2} more times]\n")
                last, repeats = entry, 0
            if repeats <= 2:
                out.append(entry)
        tb = tb.tb_next
    if repeats > 2:
        out.append(f"  [Previous line repeated {repeats - 2} more times]\n")
    return out


def describe(exc):
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a hostile __str__ still gets its error reported
        message = "<the error's message could not be read>"
    return {
        "errorType": type(exc).__name__,
        "errorMessage": message,
        "stack": _stack(exc.__traceback__),
    }


class Channel:
    """Frames over a stream socket, read through a buffer: one read usually holds a whole frame."""

    # Sent when even a short description cannot be built: prepared now, sent without allocating.
    LAST_RESORT = json.dumps({
        "errorType": "Runtime.ErrorReportFailed",
        "errorMessage": "the handler failed, and describing its error failed too",
    }).encode()

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()
        self.header = bytearray(HEADER.size)
        self.held = []  # frames that arrived while a key-value reply was awaited
        self.kv_id = 0
        self.kv_lock = _thread.allocate_lock()  # handler threads share the channel

    def kv_request(self, meta, body):
        """Sends a KV_REQUEST and waits for its KV_REPLY; returns (meta, body). One at a time:
        a handler's threads take turns on the channel."""
        with self.kv_lock:
            return self._kv_exchange(meta, body)

    def _kv_exchange(self, meta, body):
        self.kv_id = self.kv_id + 1 if self.kv_id < 0xFFFFFFFF else 1
        ident = self.kv_id
        self.send(KV_REQUEST, ident, meta, body)
        while True:
            frame = self._read_frame()
            if frame is None:
                sys.exit(0)  # the daemon is gone
            if frame[0] == KV_REPLY and frame[1] == ident:
                return frame[2], frame[3]
            if frame[0] != KV_REPLY:
                self.held.append(frame)

    def send(self, kind, ident, meta, body=b""):
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta else b"{}"
        # The function's log lines must reach their pipes before the answer does, so that the
        # daemon attributes them to this call.
        sys.stdout.flush()
        sys.stderr.flush()
        data = memoryview(HEADER.pack(kind, ident, len(meta_bytes), len(body)) + meta_bytes + body)
        while data:
            data = data[os.write(self.fd, data):]

    def send_last_resort(self, ident):
        HEADER.pack_into(self.header, 0, ERROR, ident, len(self.LAST_RESORT), 0)
        for data in (self.header, self.LAST_RESORT):
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]

    def _fill(self, n):
        """Reads until the buffer holds n bytes; False at the end of the stream."""
        while len(self.buf) < n:
            chunk = os.read(self.fd, max(READ_SIZE, n - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def receive(self):
        if self.held:
            return self.held.pop(0)
        return self._read_frame()

    def _read_frame(self):
        if not self._fill(HEADER.size):
            return None
        kind, ident, meta_len, body_len = HEADER.unpack_from(self.buf)
        if meta_len > MAX_META or body_len > MAX_BODY:
            sys.exit(70)
        end = HEADER.size + meta_len + body_len
        if not self._fill(end):
            return None
        meta_end = HEADER.size + meta_len
        meta = json.loads(self.buf[HEADER.size:meta_end]) if meta_len else {}
        body = bytes(self.buf[meta_end:end])
        del self.buf[:end]
        return kind, ident, meta, body


def load_handler(spec, root):
    module_path, _, name = spec.rpartition(".")
    sys.path.insert(0, root)
    __import__(module_path.replace("/", "."))
    handler = getattr(sys.modules[module_path.replace("/", ".")], name, None)
    if not callable(handler):
        raise AttributeError(f"module {module_path} has no function named {name}")
    return handler


def report_error(channel, ident, exc, reserve):
    """Sends the handler's error; returns the reserve, taken again for the next call."""
    if reserve is not None:
        reserve.close()  # room to describe the error, whatever the handler left
    try:
        channel.send(ERROR, ident, describe(exc))
    except Exception:  # noqa: BLE001 - out of memory or depth: say less
        try:
            channel.send(ERROR, ident, {"errorType": type(exc).__name__,
                                        "errorMessage": "<the error could not be described>"})
        except Exception:  # noqa: BLE001
            channel.send_last_resort(ident)
    return _reserve()


def main():
    channel = Channel(3)
    try:
        handler = load_handler(os.environ.get("_HANDLER", "main.handler"),
                               os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    except BaseException as exc:  # noqa: BLE001 - any import failure is the function's init error
        channel.send(INIT_ERROR, 0, describe(exc))
        return 1
    channel.send(READY, 0, {})
    reserve = _reserve()
    while True:
        frame = channel.receive()
        if frame is None:
            return 0
        kind, ident, meta, body = frame
        if kind == SHUTDOWN:
            return 0
        if kind != INVOKE:
            continue
        try:
            event = json.loads(body)
            value = handler(event, Context(meta, channel, ident))
            channel.send(RESULT, ident, {}, json.dumps(value).encode())
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the function's error
            sys.setrecursionlimit(RECURSION_LIMIT)  # the handler may have lowered it
            reserve = report_error(channel, ident, exc, reserve)


if __name__ == "__main__":
    sys.exit(main())
