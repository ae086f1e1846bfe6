"""Ember's Python runtime shim.

Loads the function's handler, then serves invocations over the frames of
docs/worker-protocol.md on fd 3. stdout and stderr are the function's own.

It imports only what every call needs: the channel is read and written with os
calls rather than the socket module, and traceback is loaded when an error is
reported, so a cold start pays for little more than the interpreter and json.
"""

import json
import os
import struct
import sys
import time

READY, INIT_ERROR, INVOKE, RESULT, ERROR, SHUTDOWN = 1, 2, 3, 4, 5, 8
HEADER = struct.Struct("<IIII")
MAX_META = 64 * 1024
MAX_BODY = 64 * 1024 * 1024
READ_SIZE = 64 * 1024


class Context:
    """What a handler gets as `context`: Lambda's Python names, plus Ember's camelCase ones."""

    def __init__(self, meta):
        self.aws_request_id = self.request_id = self.requestId = meta.get("requestId", "")
        self.function_name = self.functionName = os.environ.get("EMBER_FUNCTION_NAME", "")
        self.function_version = self.functionVersion = os.environ.get("EMBER_FUNCTION_VERSION", "")
        memory = int(os.environ.get("EMBER_MEMORY_MB", "0"))
        self.memory_limit_in_mb = self.memoryLimitMB = memory
        self._deadline_ms = meta.get("deadlineMs", 0)

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    getRemainingTimeInMillis = get_remaining_time_in_millis


def describe(exc):
    import traceback  # only on the error path: it costs a few ms to import

    return {
        "errorType": type(exc).__name__,
        "errorMessage": str(exc),
        "stack": traceback.format_exception(type(exc), exc, exc.__traceback__),
    }


class Channel:
    """Frames over a stream socket, read through a buffer: one read usually holds a whole frame."""

    def __init__(self, fd):
        self.fd = fd
        self.buf = bytearray()

    def send(self, kind, ident, meta, body=b""):
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta else b"{}"
        # The function's log lines must reach their pipes before the answer does, so that the
        # daemon attributes them to this call.
        sys.stdout.flush()
        sys.stderr.flush()
        data = memoryview(HEADER.pack(kind, ident, len(meta_bytes), len(body)) + meta_bytes + body)
        while data:
            data = data[os.write(self.fd, data):]

    def _fill(self, n):
        """Reads until the buffer holds n bytes; False at the end of the stream."""
        while len(self.buf) < n:
            chunk = os.read(self.fd, max(READ_SIZE, n - len(self.buf)))
            if not chunk:
                return False
            self.buf += chunk
        return True

    def receive(self):
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


def main():
    channel = Channel(3)
    try:
        handler = load_handler(os.environ.get("_HANDLER", "main.handler"),
                               os.environ.get("LAMBDA_TASK_ROOT", os.getcwd()))
    except BaseException as exc:  # noqa: BLE001 - any import failure is the function's init error
        channel.send(INIT_ERROR, 0, describe(exc))
        return 1
    channel.send(READY, 0, {})
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
            value = handler(event, Context(meta))
            channel.send(RESULT, ident, {}, json.dumps(value).encode())
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the function's error
            channel.send(ERROR, ident, describe(exc))


if __name__ == "__main__":
    sys.exit(main())
