"""Ember's Python runtime shim.

Loads the function's handler, then serves invocations over the frames of
docs/worker-protocol.md on fd 3. stdout and stderr are the function's own: the
function's log. What a handler sees is Lambda's Python runtime (awslambdaric):
its context object, its `logging` set-up and its error log lines.

It imports only what every call needs: the channel is read and written with os
calls rather than the socket module, and `logging` (8 ms of start-up) is set up
only once something imports it. A handler's error is reported even when the
handler used up its descriptors, its memory or its recursion depth: the stack is
formatted here without importing anything, memory is held in reserve for it, and
a last-resort frame is built at start and sent without allocating.
"""

import _thread
import builtins
import json
import mmap
import os
import struct
import sys
import time

READY, INIT_ERROR, INVOKE, RESULT, ERROR, KV_REQUEST, KV_REPLY, SHUTDOWN = 1, 2, 3, 4, 5, 6, 7, 8
INVOKE_REQUEST, INVOKE_REPLY, LOAD, MOUNTED = 10, 11, 12, 13
REPLIES = (KV_REPLY, INVOKE_REPLY)
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
        reply, body = self._channel.request(KV_REQUEST, meta, body)
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


class InvokeError(Exception):
    """context.invoke failed. The class is named by the error type (AccessDeniedException,
    RecursiveInvocationException, ...: docs/events.md); when the called function itself failed,
    function_error is "Unhandled", error is its error object and request_id its call's id."""

    error_type = "InvokeError"
    function_error = None
    error = None
    request_id = None


_INVOKE_ERRORS = {}


def _invoke_error(meta, body=b""):
    error_type = meta.get("errorType")
    if not isinstance(error_type, str) or not error_type.isidentifier():
        error_type = "ServiceException"
    cls = _INVOKE_ERRORS.get(error_type)
    if cls is None:
        cls = type(error_type, (InvokeError,), {"error_type": error_type})
        _INVOKE_ERRORS[error_type] = cls
    exc = cls(str(meta.get("errorMessage", "")))
    if meta.get("functionError"):
        exc.function_error = meta["functionError"]
        exc.request_id = meta.get("requestId")
        try:
            exc.error = json.loads(body)
        except ValueError:
            pass
    return exc


def _invoke(channel, call, name, event, async_, qualifier):
    """context.invoke: the called function's value, or {"id": ...} of the queued event."""
    if not isinstance(name, str):
        raise _invoke_error({"errorType": "InvalidParameterValueException",
                             "errorMessage": "the function name must be a string"})
    if qualifier is not None:
        name = f"{name}:{qualifier}"
    try:
        text = json.dumps({} if event is None else event, allow_nan=False,
                          separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise _invoke_error({"errorType": "InvalidRequestContentException",
                             "errorMessage": f"the event cannot be written as JSON: {exc}"}) from None
    meta = {"call": call, "function": name, "async": bool(async_)}
    reply, body = channel.request(INVOKE_REQUEST, meta, text)
    if not reply.get("ok"):
        raise _invoke_error(reply, body)
    if async_:
        return {"id": reply.get("id")}
    if isinstance(reply.get("contentType"), str):
        return body.decode("utf-8", "replace")  # a custom runtime's raw answer
    return json.loads(body)


def _env(ember_name, lambda_name, default=""):
    return os.environ.get(ember_name) or os.environ.get(lambda_name, default)


class CognitoIdentity:
    """`context.identity`: Lambda's runtime always gives one, empty unless a mobile SDK sent it."""

    cognito_identity_id = None
    cognito_identity_pool_id = None

    def __repr__(self):
        return (f"CognitoIdentity([cognito_identity_id={self.cognito_identity_id},"
                f"cognito_identity_pool_id={self.cognito_identity_pool_id}])")


class LambdaContext:
    """What a handler gets as `context`: the attributes of Lambda's Python context, with its
    types (memory_limit_in_mb is a string there), plus Ember's: request_id, requestId, the
    camelCase names and kv. What is the same for every call is a class attribute, set once by
    configure() before the handler loads; a call only fills the slots."""

    __slots__ = ("aws_request_id", "invoked_function_arn", "kv", "identity", "_deadline_ms",
                 "_channel", "_call", "__dict__")  # a handler may add attributes of its own, as on Lambda

    function_name = functionName = ""
    function_version = functionVersion = ""
    memory_limit_in_mb = "0"
    memoryLimitMB = 0
    log_group_name = None
    log_stream_name = None
    client_context = None
    tenant_id = None
    InvokeError = InvokeError  # what invoke() raises, for `except context.InvokeError`
    FUNCTION_ARN = ""

    def __init__(self, meta, channel=None, call=0):
        self.aws_request_id = meta.get("requestId", "")
        qualifier = meta.get("qualifier")
        self.invoked_function_arn = (self.FUNCTION_ARN if not isinstance(qualifier, str)
                                     else f"{self.FUNCTION_ARN}:{qualifier}")
        self.kv = Kv(channel, call)
        self.identity = CognitoIdentity()
        # The timeout runs from the call's start, here, not from when the daemon sent it.
        timeout = meta.get("timeoutMs")
        self._deadline_ms = (int(time.time() * 1000) + timeout if isinstance(timeout, int)
                             else meta.get("deadlineMs", 0))
        self._channel, self._call = channel, call

    def invoke(self, function_name, event=None, async_=False, qualifier=None, **options):
        """Calls another function and returns its value; with async_=True (or
        **{"async": True}) queues the event and returns {"id": ...}. Raises InvokeError."""
        async_ = async_ or options.pop("async", False)
        if options:
            raise TypeError(f"invoke() got unexpected keyword arguments: {', '.join(options)}")
        return _invoke(self._channel, self._call, function_name, event, async_, qualifier)

    @property
    def request_id(self):
        return self.aws_request_id

    requestId = request_id

    def get_remaining_time_in_millis(self):
        return max(0, int(self._deadline_ms - time.time() * 1000))

    getRemainingTimeInMillis = get_remaining_time_in_millis

    @staticmethod
    def log(msg):
        """Lambda's context.log: the text as it is, no line end added."""
        sys.stdout.write(str(msg))

    def __repr__(self):
        return (f"LambdaContext([aws_request_id={self.aws_request_id},"
                f"log_group_name={self.log_group_name},log_stream_name={self.log_stream_name},"
                f"function_name={self.function_name},"
                f"memory_limit_in_mb={self.memory_limit_in_mb},"
                f"function_version={self.function_version},"
                f"invoked_function_arn={self.invoked_function_arn},"
                f"client_context={self.client_context},identity={self.identity},"
                f"tenant_id={self.tenant_id}])")


def configure():
    """Sets what the context reports from the function's environment: at start, or in a pooled
    worker once LOAD has brought the environment."""
    cls = LambdaContext
    cls.function_name = cls.functionName = _env("EMBER_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_NAME")
    cls.function_version = cls.functionVersion = _env("EMBER_FUNCTION_VERSION",
                                                      "AWS_LAMBDA_FUNCTION_VERSION")
    cls.memory_limit_in_mb = _env("EMBER_MEMORY_MB", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "0")
    cls.memoryLimitMB = int(cls.memory_limit_in_mb) if cls.memory_limit_in_mb.isdigit() else 0
    cls.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME")
    cls.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME")
    # Lambda's account id is not Ember's to give; twelve zeros keep ARN parsers happy.
    cls.FUNCTION_ARN = (f"arn:aws:lambda:{os.environ.get('AWS_REGION') or 'us-east-1'}:"
                        f"000000000000:function:"
                        f"{_env('AWS_LAMBDA_FUNCTION_NAME', 'EMBER_FUNCTION_NAME')}")


# The request id of the call in progress, or of the last one: what Lambda's log lines show
# between calls ("" before the first, during init).
_request_id = ""


def _install_logging(logging):
    """Gives the root logger Lambda's handler: its line format, UTC times, the request id, stdout.
    The root level is INFO, as with Lambda's log-level controls, unless AWS_LAMBDA_LOG_LEVEL names
    another; a later logging.basicConfig() does nothing because the root logger has a handler."""
    if _LoggingHook in sys.meta_path:
        sys.meta_path.remove(_LoggingHook)

    class LambdaLoggerHandler(logging.Handler):
        def emit(self, record):
            text = self.format(record)
            # The format ends the line; a record with a traceback does not (exc_text is added
            # after it), and the daemon splits the log into lines.
            sys.stdout.write(text if text.endswith("\n") else text + "\n")

    class LambdaLoggerFilter(logging.Filter):
        def filter(self, record):
            record.aws_request_id = _request_id
            record.tenant_id = None
            return True

    logging.Formatter.converter = time.gmtime  # for every formatter, as Lambda's runtime does
    handler = LambdaLoggerHandler()
    handler.setFormatter(logging.Formatter(
        "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s\n",
        "%Y-%m-%dT%H:%M:%S"))
    handler.addFilter(LambdaLoggerFilter())
    root = logging.getLogger()
    level = os.environ.get("AWS_LAMBDA_LOG_LEVEL")
    level = {None: "INFO", "TRACE": "DEBUG"}.get(level, level).upper()
    root.setLevel(level if level in logging._nameToLevel else "INFO")  # noqa: SLF001
    root.addHandler(handler)


class _LoggingHook:
    """On sys.meta_path until `logging` is first imported, by the function or by a module it uses:
    then calls _install_logging as soon as the module has run, before its importer can use it.
    Importing logging at start-up would cost every cold start 8 ms, logging or not."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "logging":
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None) if finder is not _LoggingHook else None
            spec = find(name, path, target) if find is not None else None
            if spec is not None:
                break
        else:
            return None
        if isinstance(spec.loader, type):  # a frozen or built-in module: a class serves them all
            return spec
        try:
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                try:
                    _install_logging(module)
                except Exception:  # noqa: BLE001 - not the importer's error: logs go unformatted
                    pass

            spec.loader.exec_module = exec_module  # the loader is this spec's own
        except (AttributeError, TypeError):
            pass
        return spec


def _log_error(error):
    """Writes an unhandled error to the function's log as Lambda's Python runtime does: `[ERROR]
    Type: message`, `Traceback (most recent call last):`, then the stack with each line's leading
    spaces made no-break spaces. Lines end with \\n where Lambda's stdout sink uses \\r: the daemon
    splits the log at \\n, and Lambda's own log frames show the lines just so."""
    head = "[ERROR] " + error["errorType"]
    if error["errorMessage"]:
        head += ": " + error["errorMessage"]
    lines = [head, "Traceback (most recent call last):"]
    for entry in error["stack"]:
        for line in entry.splitlines():
            text = line.lstrip(" ")
            lines.append("\u00a0" * (len(line) - len(text)) + text)
    sys.stdout.write("\n".join(lines) + "\n")


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


def _flush_output():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a stream the handler closed or replaced holds no answer
            pass


class Channel:
    """Frames over a stream socket, read through a buffer: one read usually holds a whole frame."""

    # Sent when even a short description cannot be built: prepared now, sent without allocating.
    LAST_RESORT = json.dumps({
        "errorType": "Runtime.ErrorReportFailed",
        "errorMessage": "the handler failed, and describing its error failed too",
    }).encode()

    def __init__(self, fd):
        self.fd = fd
        # Frames are read into one buffer, allocated (and its pages touched) once: a read of its
        # own for each frame would allocate, and give back, memory the next read faults in again.
        # Bytes [pos, end) are read and not yet taken.
        self.buf = bytearray(READ_SIZE)
        self.view = memoryview(self.buf)
        self.pos = self.end = 0
        self.header = bytearray(HEADER.size)
        # Handler threads share the channel: one of them (or the main loop) reads at a time and
        # hands each reply to the thread that waits for it; INVOKE and SHUTDOWN frames read by a
        # waiting thread are held for the main loop.
        self.lock = _thread.allocate_lock()
        self.send_lock = _thread.allocate_lock()
        self.reading = False
        self.sleepers = []   # locks of threads waiting for the reader
        self.waiting = set()  # ids of requests sent and not yet answered
        self.replies = {}  # id -> (meta, body), read for a thread not yet awake
        self.held = []
        self.request_id = 0

    def request(self, kind, meta, body):
        """Sends a KV_REQUEST or INVOKE_REQUEST and waits for its reply; returns (meta, body)."""
        with self.lock:
            self.request_id = self.request_id + 1 if self.request_id < 0xFFFFFFFF else 1
            ident = self.request_id
            self.waiting.add(ident)
        self.send(kind, ident, meta, body)
        with self.lock:
            # Another thread may have read this reply already, and ended since.
            if ident in self.replies:
                self.waiting.discard(ident)
                return self.replies.pop(ident)
            alone = _thread._count() == 0 and not self.reading
        if alone:
            # No other thread: read until the reply, holding what the main loop will want.
            while True:
                frame = self._read_frame()
                if frame is None:
                    _flush_output()
                    os._exit(0)  # the daemon is gone
                if frame[0] not in REPLIES:
                    self.held.append(frame)
                elif frame[1] == ident:
                    self.waiting.discard(ident)
                    return frame[2], frame[3]
        while True:
            frame = self._next(ident)
            if frame is not None:
                return frame

    def receive(self):
        """The next INVOKE or SHUTDOWN for the main loop; None once the daemon is gone."""
        if _thread._count() == 0 and not self.held:
            # No thread but this one: nothing else reads or waits (the usual case, and the warm
            # path). A reply read here answers nothing that still waits.
            while True:
                frame = self._read_frame()
                if frame is None or frame[0] not in REPLIES:
                    return frame
        while True:
            frame = self._next(None)
            if frame is not None:
                return frame if frame != () else None

    def _next(self, ident):
        """One step of waiting: the reply for `ident` (a request) or a held frame (ident None);
        None to wait again; () when the stream ended."""
        with self.lock:
            if ident is not None and ident in self.replies:
                self.waiting.discard(ident)
                return self.replies.pop(ident)
            if ident is None and self.held:
                return self.held.pop(0)
            if self.reading:
                sleeper = _thread.allocate_lock()
                sleeper.acquire()
                self.sleepers.append(sleeper)
            else:
                self.reading, sleeper = True, None
        if sleeper is not None:
            sleeper.acquire()  # released when the reader has read a frame
            return None
        frame = self._read_frame()
        with self.lock:
            self.reading = False
            for other in self.sleepers:
                other.release()
            self.sleepers.clear()
            if frame is None:
                if ident is None:
                    return ()
                _flush_output()
                os._exit(0)  # the daemon is gone
            if frame[0] in REPLIES:
                if frame[1] == ident:
                    self.waiting.discard(ident)
                    return frame[2], frame[3]
                if frame[1] in self.waiting:
                    self.replies[frame[1]] = frame[2], frame[3]
            elif ident is None:
                return frame
            else:
                self.held.append(frame)
        return None

    def send(self, kind, ident, meta, body=b""):
        meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta else b"{}"
        # The function's log lines must reach their pipes before the answer does, so that the
        # daemon attributes them to this call.
        _flush_output()
        data = memoryview(HEADER.pack(kind, ident, len(meta_bytes), len(body)) + meta_bytes + body)
        with self.send_lock:
            while data:
                data = data[os.write(self.fd, data):]

    def send_last_resort(self, ident):
        HEADER.pack_into(self.header, 0, ERROR, ident, len(self.LAST_RESORT), 0)
        with self.send_lock:
            for data in (self.header, self.LAST_RESORT):
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view):]

    def _fill(self, n):
        """Reads until n bytes wait in the buffer; False at the end of the stream."""
        while self.end - self.pos < n:
            if self.pos + n > len(self.buf):
                self._make_room(n)
            got = os.readv(self.fd, [self.view[self.end:]])
            if not got:
                return False
            self.end += got
        return True

    def _make_room(self, n):
        """Moves the bytes that wait to the front of the buffer, or into a larger one for a frame
        of n bytes that would not fit."""
        waiting = self.buf[self.pos:self.end]
        if n > len(self.buf):
            self.view.release()
            self.buf = bytearray(n)
            self.view = memoryview(self.buf)
        self.buf[:len(waiting)] = waiting
        self.pos, self.end = 0, len(waiting)

    def _read_frame(self):
        if not self._fill(HEADER.size):
            return None
        kind, ident, meta_len, body_len = HEADER.unpack_from(self.buf, self.pos)
        if meta_len > MAX_META or body_len > MAX_BODY:
            sys.exit(70)
        if not self._fill(HEADER.size + meta_len + body_len):
            return None
        meta_start = self.pos + HEADER.size
        meta_end = meta_start + meta_len
        end = meta_end + body_len
        meta = json.loads(self.buf[meta_start:meta_end]) if meta_len else {}
        body = bytes(self.view[meta_end:end])
        self.pos = end
        if self.pos == self.end:
            self.pos = self.end = 0
            if len(self.buf) > READ_SIZE:  # a large frame's buffer goes
                self.view.release()
                self.buf = bytearray(READ_SIZE)
                self.view = memoryview(self.buf)
        return kind, ident, meta, body


class Fault(Exception):
    """A handler that cannot be loaded, named as Lambda's runtime names it (Runtime.*)."""

    def __init__(self, error_type, message, stack=()):
        super().__init__(message)
        self.error = {"errorType": error_type, "errorMessage": message, "stack": list(stack)}


def set_path(root):
    """The bundle first, then the standard library; never the host's packages. The daemon starts
    Python with -I -S, so site adds none; any that are there anyway (a run without -S) go."""
    kept = [root]
    for entry in sys.path:
        parts = entry.split("/")
        inside = entry == root or entry.startswith(root.rstrip("/") + "/")
        if entry != root and (inside or ("site-packages" not in parts
                                         and "dist-packages" not in parts)):
            kept.append(entry)
    sys.path[:] = kept


def load_handler(spec):
    """The handler named by `spec` (module.function, the module's path in the bundle may use /);
    raises Fault with the error Lambda's runtime gives for a spec it cannot load, or the error
    the module raised at import."""
    module_path, dot, name = spec.rpartition(".")
    if not dot:
        raise Fault("Runtime.MalformedHandlerName",
                    f"Bad handler '{spec}': not enough values to unpack (expected 2, got 1)")
    module_name = module_path.replace("/", ".")
    if module_path.split(".")[0] in sys.builtin_module_names:
        raise Fault("Runtime.BuiltInModuleConflict",
                    f"Cannot use built-in module {module_path} as a handler module")
    try:
        __import__(module_name)
    except ImportError as exc:
        raise Fault("Runtime.ImportModuleError",
                    f"Unable to import module '{module_path}': {exc}") from None
    except SyntaxError as exc:
        raise Fault("Runtime.UserCodeSyntaxError",
                    f"Syntax error in module '{module_path}': {exc}",
                    [f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text}']) from None
    handler = getattr(sys.modules[module_name], name, None)
    if handler is None:
        raise Fault("Runtime.HandlerNotFound",
                    f"Handler '{name}' missing on module '{module_path}'")
    if not callable(handler):
        raise Fault("Runtime.HandlerNotFound",
                    f"Handler '{name}' on module '{module_path}' is not a function")
    return handler


def log_error(error):
    """_log_error, unless writing it fails (no memory, a closed stdout): the answer goes anyway."""
    try:
        _log_error(error)
    except Exception:  # noqa: BLE001
        pass


def report_error(channel, ident, exc, reserve):
    """Logs the handler's error and sends it; returns the reserve, taken again for the next call."""
    if reserve is not None:
        reserve.close()  # room to describe the error, whatever the handler left
    try:
        error = describe(exc)
        log_error(error)
        channel.send(ERROR, ident, error)
    except Exception:  # noqa: BLE001 - out of memory or depth: say less
        try:
            channel.send(ERROR, ident, {"errorType": type(exc).__name__,
                                        "errorMessage": "<the error could not be described>"})
        except Exception:  # noqa: BLE001
            channel.send_last_resort(ident)
    return _reserve()


class _Quitter:
    """exit() and quit(), which site would have defined: they raise SystemExit, and the worker
    ends as on Lambda (the call fails, the instance is replaced)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"Use {self.name}() or Ctrl-D (i.e. EOF) to exit"

    def __call__(self, code=None):
        raise SystemExit(code)


def warm_imports(directory=None):
    """A pooled worker imports a module once from its private /tmp before it waits: the first
    import from a new directory runs import machinery the interpreter has not specialized yet,
    which the function's own import then no longer pays. Nothing of it stays; a failure only
    means a colder import later. `directory`: an empty one to use instead, made by the caller."""
    made = directory is None
    if made:
        directory = os.path.join(os.environ.get("TMPDIR") or "/tmp", f".ember-warm-{os.getpid()}")
    name = "_ember_warm_module"
    try:
        if made:
            os.mkdir(directory)
        with open(os.path.join(directory, name + ".py"), "w") as f:
            f.write("def handler(event, context):\n    return None\n")
        sys.path.insert(0, directory)
        sys.dont_write_bytecode = True  # no __pycache__ left in the function's /tmp
        load_handler(name + ".handler")
    except Exception:  # noqa: BLE001 - a colder first import, nothing worse
        pass
    finally:
        sys.dont_write_bytecode = False
        if sys.path and sys.path[0] == directory:
            del sys.path[0]
        sys.modules.pop(name, None)
        sys.path_importer_cache.pop(directory, None)
        for entry in (os.path.join(directory, name + ".py"), directory):
            try:
                (os.unlink if entry.endswith(".py") else os.rmdir)(entry)
            except OSError:
                pass


def warm_load():
    """A pooled worker runs what LOAD runs once, on a made-up environment, before it waits: the
    first run of the frame decoder, of os.environ's setters and of configure() costs more than
    all of LOAD does once they have run. What it sets goes again."""
    meta = json.loads(json.dumps({"env": {f"EMBER_WARM_{i}": "-" * 32 for i in range(16)}}))
    for name, value in meta["env"].items():
        os.environ[name] = value
    for name in meta["env"]:
        del os.environ[name]
    configure()


def wait_for_load(channel):
    """In a pooled worker (EMBER_POOLED=1), started ahead of demand for no function yet: READY,
    then the meta of the LOAD that names the function; None when told to stop first."""
    warm_imports()
    warm_load()
    channel.send(READY, 0, {"pooled": True})
    while True:
        frame = channel.receive()
        if frame is None or frame[0] == SHUTDOWN:
            return None
        if frame[0] == LOAD:
            return frame[2]


def apply_load(meta):
    """The function's environment from LOAD, as a worker started for it would have had it."""
    env = meta.get("env")
    env = env if isinstance(env, dict) else {}
    zone = os.environ.get("TZ")
    for name, value in env.items():
        if os.environ.get(name) != value:  # most of the base environment is there already
            os.environ[name] = value
    os.environ.pop("EMBER_POOLED", None)
    if os.environ.get("TZ") != zone:
        time.tzset()  # read once at start otherwise; the function's env may name another zone


def wait_for_mount(channel):
    """After LOAD: until MOUNTED says the bundle is on LAMBDA_TASK_ROOT (the daemon mounts it while
    the worker takes LOAD in; a directory entered before would be the empty one beneath). False
    when told to stop first. Any other frame is kept for the main loop."""
    while True:
        frame = channel._read_frame()  # noqa: SLF001 - no thread runs yet: nothing else reads
        if frame is None or frame[0] == SHUTDOWN:
            return False
        if frame[0] == MOUNTED:
            return True
        channel.held.append(frame)


def zygote_prepare():
    """In ember-python-zygote, once, before it forks any worker: the warming a pooled worker does
    before it waits, done once for all of them. It must leave no thread and no open file behind:
    each worker is a fork of this interpreter, with every descriptor but its own closed. The
    zygote runs as root on the host: the module it imports lies in a directory of its own that
    no other user can enter (mkdtemp, mode 0700), not at a name another user could take first."""
    import tempfile
    directory = tempfile.mkdtemp(prefix=".ember-warm-")
    try:
        warm_imports(directory)
    finally:
        try:
            os.rmdir(directory)
        except OSError:
            pass
    # What the zygote holds now stays out of every collection, in it and in its children: a
    # collection writes to the objects it visits, which would copy their pages into each child.
    import gc
    gc.collect()
    gc.freeze()


def zygote_child(env):
    """In a worker forked from the zygote, sandboxed: `env` is the environment a python3 started
    for it would have had. Then the worker runs as that python3 would."""
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    # A started `python3 -I` has neither the shim's folder on its path nor the host's paths in
    # its argv; the zygote imported the shim from the host's folder, which the sandbox does not
    # show.
    shim_dir = os.path.dirname(__file__)
    sys.path[:] = [entry for entry in sys.path if entry != shim_dir]
    runtime = os.environ.get("LAMBDA_RUNTIME_DIR")
    sys.argv[:] = [os.path.join(runtime, "python", "bootstrap.py") if runtime else "bootstrap.py"]
    return main()


def main():
    global _request_id
    channel = Channel(3)
    for name in ("exit", "quit"):
        if not hasattr(builtins, name):
            setattr(builtins, name, _Quitter(name))
    pooled = os.environ.get("EMBER_POOLED") == "1"
    load = wait_for_load(channel) if pooled else None
    if pooled and load is None:
        return 0
    try:
        if pooled:
            apply_load(load)
        configure()
        set_path(os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())
        if "logging" in sys.modules:
            _install_logging(sys.modules["logging"])
        else:
            sys.meta_path.insert(0, _LoggingHook)
        if pooled:
            if not wait_for_mount(channel):
                return 0
            os.chdir(os.environ["LAMBDA_TASK_ROOT"])
        handler = load_handler(os.environ.get("_HANDLER", "main.handler"))
    except Fault as fault:
        log_error(fault.error)
        channel.send(INIT_ERROR, 0, fault.error)
        return 1
    except BaseException as exc:  # noqa: BLE001 - any import failure is the function's init error
        error = describe(exc)
        log_error(error)
        channel.send(INIT_ERROR, 0, error)
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
        _request_id = meta.get("requestId", "")
        try:
            event = json.loads(body)
            value = handler(event, LambdaContext(meta, channel, ident))
            channel.send(RESULT, ident, {}, json.dumps(value).encode())
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the function's error
            sys.setrecursionlimit(RECURSION_LIMIT)  # the handler may have lowered it
            reserve = report_error(channel, ident, exc, reserve)


if __name__ == "__main__":
    sys.exit(main())
