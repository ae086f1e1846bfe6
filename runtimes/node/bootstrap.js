'use strict';
// Ember's Node.js runtime shim. Loads the function's handler, then serves invocations over the
// frames of docs/worker-protocol.md on fd 3. stdout and stderr are the function's own. Loading,
// handler styles, `context` and error reports follow Lambda's Node.js runtime
// (aws-lambda-nodejs-runtime-interface-client), so that Lambda functions run unmodified.

const fs = require('fs');
const net = require('net');
const path = require('path');
const Module = require('module');
const { pathToFileURL } = require('url');
const { isNativeError } = require('util').types;

const READY = 1;
const INIT_ERROR = 2;
const INVOKE = 3;
const RESULT = 4;
const ERROR = 5;
const KV_REQUEST = 6;
const KV_REPLY = 7;
const SHUTDOWN = 8;
const INVOKE_REQUEST = 10;
const INVOKE_REPLY = 11;
const LOAD = 12;
const MOUNTED = 13;
const HEADER_BYTES = 16;
const MAX_META = 64 * 1024;
const MAX_BODY = 64 * 1024 * 1024;

const env = process.env;
// What the function's environment says, set by configure() before the handler loads: at start,
// or, in a pooled worker (EMBER_POOLED=1), once LOAD has brought the environment.
let taskRoot = '';
let functionName = '';
let functionVersion = '';
let memoryLimitMB = 0;
let memoryLimitInMB = '0';
let logGroupName;
let logStreamName;
// Lambda's ARN of the function, under a placeholder account; a call that named a version or an
// alias gets it appended (`context.invokedFunctionArn`).
let functionArn = '';
// Calls served at once; the daemon may send more, which wait here and start in order. 0 until
// configured, so that a call sent to a pooled worker before LOAD is ignored.
let concurrency = 0;

function configure() {
  taskRoot = path.resolve(env.LAMBDA_TASK_ROOT || process.cwd());
  functionName = env.EMBER_FUNCTION_NAME || '';
  functionVersion = env.EMBER_FUNCTION_VERSION || '';
  memoryLimitMB = Number(env.EMBER_MEMORY_MB || 0);
  memoryLimitInMB = String(memoryLimitMB);
  logGroupName = env.AWS_LAMBDA_LOG_GROUP_NAME;
  logStreamName = env.AWS_LAMBDA_LOG_STREAM_NAME;
  functionArn = `arn:aws:lambda:${env.AWS_REGION || 'us-east-1'}:000000000000:function:` +
    (env.AWS_LAMBDA_FUNCTION_NAME || functionName);
  concurrency = Math.max(1, Math.floor(Number(env.EMBER_CONCURRENCY || 1)) || 1);
}

// Made now, before the function's code runs: Node makes them on first use, which loads modules,
// and the error path must work when the function has used up its descriptors or its memory.
const stdout = process.stdout;
const stderr = process.stderr;

const channel = new net.Socket({ fd: 3, readable: true, writable: true });
// Started ahead of demand for no function yet: it waits for LOAD (docs/worker-protocol.md).
let awaitingLoad = env.EMBER_POOLED === '1';
// After LOAD, until MOUNTED says the bundle is on LAMBDA_TASK_ROOT.
let awaitingMount = false;
let inFlight = 0;
let shuttingDown = false;
const waiting = [];  // [id, meta, body] of INVOKEs past `concurrency`, or sent before READY
let handler = null;  // set once loaded
let handlerReady = false;  // READY sent: INVOKEs that came before it waited until then
let handlerTakesCallback = false;  // declares (event, context, callback)

// Key-value requests made in one turn of the event loop (all those that one batch of replies set
// off) leave in one write: the channel stays corked until the tick ends. An answer leaves at
// once, with whatever is queued before it: the next call may start, and end the process, before
// the tick does.
let corked = false;
function uncorkChannel() {
  if (!corked) return;
  corked = false;
  channel.uncork();
}

// Exits once what is queued on the channel has been handed to the kernel.
function exitWhenSent(code) {
  uncorkChannel();
  channel.end(() => process.exit(code));
}

function send(type, id, metaText, body) {
  const metaBuf = Buffer.from(metaText);
  const bodyBuf = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
  const header = Buffer.allocUnsafe(HEADER_BYTES);
  header.writeUInt32LE(type, 0);
  header.writeUInt32LE(id, 4);
  header.writeUInt32LE(metaBuf.length, 8);
  header.writeUInt32LE(bodyBuf.length, 12);
  if (!corked) {
    corked = true;
    channel.cork();
    process.nextTick(uncorkChannel);
  }
  channel.write(header);
  channel.write(metaBuf);
  if (bodyBuf.length) channel.write(bodyBuf);
  if (type !== KV_REQUEST && type !== INVOKE_REQUEST) uncorkChannel();
}

// Reads a property or converts a value without letting a hostile error object (a throwing
// getter, toString or Symbol.toPrimitive) stop the report.
function safely(read, fallback) {
  try {
    const value = read();
    return typeof value === 'string' ? value : fallback;
  } catch {
    return fallback;
  }
}

// As Lambda: native errors (also from another realm), and objects with a string name, message
// and stack.
function isError(err) {
  try {
    if (err instanceof Error || isNativeError(err)) return true;
    return err !== null && typeof err === 'object' && typeof err.name === 'string' &&
      typeof err.message === 'string' && typeof err.stack === 'string';
  } catch {
    return false;  // a Proxy whose traps throw
  }
}

// `trace` is Lambda's name for the stack lines, `stack` Ember's; both are sent.
function describe(err) {
  if (isError(err)) {
    const stack = safely(() => String(err.stack || ''), '').split('\n');
    return {
      errorType: safely(() => err.name, 'Error') || 'Error',
      errorMessage: safely(() => err.message, ''),
      stack,
      trace: stack,
    };
  }
  return {
    errorType: 'Error',
    errorMessage: safely(() => String(err), '<unprintable value>'),
    stack: [],
    trace: [],
  };
}

// The meta of an ERROR or INIT_ERROR frame. Meta over MAX_META bytes would make the daemon take
// the worker for broken, so a huge message or stack is cut: the short form is under 32 KiB even
// if every character is written as a 6-byte \uXXXX escape.
function errorMeta(err) {
  const desc = describe(err);
  const text = JSON.stringify(desc);
  // Each UTF-16 unit is at most 3 bytes of UTF-8: the exact count is needed only past a third.
  if (text.length <= MAX_META / 3 || Buffer.byteLength(text) <= MAX_META) return text;
  const stack = desc.stack.slice(0, 10).map((line) => line.slice(0, 200));
  return JSON.stringify({
    errorType: desc.errorType.slice(0, 256),
    errorMessage: desc.errorMessage.slice(0, 1024),
    stack,
    trace: stack,
  });
}

// Writes the line Lambda's runtime logs for an error it reports (its console.error of a label
// and the error, which util.format joins with a space): `TIME\tREQUEST_ID\tERROR\tInvoke Error
// \t{"errorType", "errorMessage", "stack"}`. Never throws: the answer matters more than the line.
function logError(requestId, label, metaText) {
  try {
    // The meta without its last key, the trace: a ',"trace":' inside a string would be escaped,
    // so the last match is the key. Slicing shares the string rather than copying it.
    const json = metaText.slice(0, metaText.lastIndexOf(',"trace":')) + '}';
    stderr.write(`${new Date().toISOString()}\t${requestId}\tERROR\t${label} \t${json}\n`);
  } catch {
    // No line, then.
  }
}

// Sent when even describing the error failed (out of memory): built at start, so sending it
// costs only a 16-byte copy of the header with the call's id.
const LAST_RESORT_META = Buffer.from(JSON.stringify({
  errorType: 'Runtime.ErrorReportFailed',
  errorMessage: 'the handler failed, and describing its error failed too',
}));
const LAST_RESORT_HEADER = Buffer.alloc(HEADER_BYTES);
LAST_RESORT_HEADER.writeUInt32LE(ERROR, 0);
LAST_RESORT_HEADER.writeUInt32LE(LAST_RESORT_META.length, 8);

// Logs the error, lets the function's output go first (see flushStdio), then answers with it.
async function reportError(id, requestId, err) {
  let metaText = null;
  try {
    metaText = errorMeta(err);
    logError(requestId, 'Invoke Error', metaText);
  } catch {
    // The last resort below.
  }
  const flushed = flushStdio();
  if (flushed) await flushed;
  try {
    if (metaText !== null) {
      send(ERROR, id, metaText);
      return;
    }
  } catch {
    // The last resort below.
  }
  LAST_RESORT_HEADER.writeUInt32LE(id, 4);
  channel.cork();
  channel.write(Buffer.from(LAST_RESORT_HEADER));
  channel.write(LAST_RESORT_META);
  channel.uncork();
}

function runtimeError(type, message) {
  const err = new Error(message);
  err.name = type;
  return err;
}

// Lambda's names for what fails while loading: a SyntaxError (also an ES import of a name the
// module does not export) is Runtime.UserCodeSyntaxError, a missing module
// Runtime.ImportModuleError, with the error as text for message ("SyntaxError: Unexpected token
// ..."). Anything else stays as thrown. The stack stays the original one, which points into the
// function's file where Lambda's would point into its runtime.
function asLoadError(err) {
  let type = null;
  try {
    if (err instanceof SyntaxError) {
      type = 'Runtime.UserCodeSyntaxError';
    } else if (err !== null && typeof err === 'object' &&
               (err.code === 'MODULE_NOT_FOUND' || err.code === 'ERR_MODULE_NOT_FOUND')) {
      type = 'Runtime.ImportModuleError';
    }
  } catch {
    return err;  // a hostile value thrown by the function's code: reported as it is
  }
  if (type === null) return err;
  const wrapped = runtimeError(type, safely(() => String(err), 'the module failed to load'));
  wrapped.stack = safely(() => err.stack, `${type}: ${wrapped.message}`);
  return wrapped;
}

// Whether a .js file is an ES module: the nearest package.json says so, as Node decides, looking
// no higher than the task root (the bundle) and not past a node_modules folder.
function packageTypeIsModule(dir) {
  for (;;) {
    if (path.basename(dir) === 'node_modules') return false;
    let text = null;
    try {
      text = fs.readFileSync(path.join(dir, 'package.json'), 'utf8');
    } catch {
      // None here: look further up.
    }
    if (text !== null) {
      try {
        return JSON.parse(text).type === 'module';
      } catch {
        return false;  // as Lambda: an unreadable package.json does not make a module
      }
    }
    const parent = path.dirname(dir);
    if (dir === taskRoot || parent === dir) return false;
    dir = parent;
  }
}

// Names the top-level-declaration trailer can test with `typeof`: an identifier, no reserved word.
const RESERVED = new Set(('arguments await break case catch class const continue debugger ' +
  'default delete do else enum eval export extends false finally for function if implements ' +
  'import in instanceof interface let new null package private protected public return static ' +
  'super switch this throw true try typeof var void while with yield').split(' '));

// A CommonJS file that only declares a top-level `function export(...)` works too: the file is
// compiled once with a trailer that exports the declaration when nothing else was exported under
// that name. Node (20.19 and later) runs a file that has ES module syntax and no "type" as an ES
// module, as Lambda's require() does: there `module` is not defined, and the trailer does nothing.
function loadCommonJs(file, name) {
  const source = fs.readFileSync(file, 'utf8');
  const mod = new Module(file, null);
  mod.filename = file;
  mod.paths = Module._nodeModulePaths(path.dirname(file));
  const trailer = /^[A-Za-z_$][\w$]*$/.test(name) && !RESERVED.has(name)
    ? `\n;if (typeof module !== 'undefined' && typeof ${name} === 'function' && module.exports &&` +
      ` !Object.prototype.hasOwnProperty.call(module.exports, '${name}')) {` +
      ` module.exports.${name} = ${name}; }\n`
    : '';
  mod._compile(source + trailer, file);
  return mod.exports[name];
}

// Loads `file.export` from the task root as Lambda does: the first of file.js, file.mjs and
// file.cjs that exists; a .mjs, or a .js that packageTypeIsModule, as an ES module with import()
// (which settles once the module has run, top-level await included), the others as CommonJS.
async function loadHandler(spec) {
  const dot = spec.lastIndexOf('.');
  if (dot <= spec.lastIndexOf('/') + 1 || dot === spec.length - 1) {
    throw runtimeError('Runtime.MalformedHandlerName',
      `'${spec}' is not a handler: it must be FILE.EXPORT`);
  }
  const file = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  const base = path.resolve(taskRoot, file);
  let found = null;
  for (const ext of ['.js', '.mjs', '.cjs']) {
    if (fs.existsSync(base + ext)) {
      found = base + ext;
      break;
    }
  }
  if (found === null) {
    throw runtimeError('Runtime.ImportModuleError', `Error: Cannot find module '${file}': ` +
      `there is no ${path.basename(base)}.js, .mjs or .cjs in ${path.dirname(base)}`);
  }
  let exported;
  try {
    let esm = found.endsWith('.mjs') ||
      (found.endsWith('.js') && packageTypeIsModule(path.dirname(found)));
    if (!esm) {
      try {
        exported = loadCommonJs(found, name);
      } catch (err) {
        // An ES module found by its syntax, with top-level await, which require() refuses before
        // running it. import() can.
        if (safely(() => err.code, '') !== 'ERR_REQUIRE_ASYNC_MODULE') throw err;
        esm = true;
      }
    }
    if (esm) exported = (await import(pathToFileURL(found).href))[name];
  } catch (err) {
    throw asLoadError(err);
  }
  // Lambda's messages.
  if (!exported) {
    throw runtimeError('Runtime.HandlerNotFound', `${spec} is undefined or not exported`);
  }
  if (typeof exported !== 'function') {
    throw runtimeError('Runtime.HandlerNotFound', `${spec} is not a function`);
  }
  return exported;
}

// The key-value store (docs/kv.md). Each request is a KV_REQUEST frame naming the call it is made
// for; the daemon answers with a KV_REPLY of the same id, in any order.
class KvError extends Error {
  constructor(type, message) {
    super(message);
    this.name = type;
  }
}

const kvPending = new Map();  // request id -> [resolve, reject, op]
let nextRequestId = 1;  // of KV_REQUEST and INVOKE_REQUEST frames

function newRequestId() {
  const id = nextRequestId;
  nextRequestId = nextRequestId >= 0xffffffff ? 1 : nextRequestId + 1;
  return id;
}

function kvRequest(call, ns, op, fields, body) {
  const id = newRequestId();
  const meta = { op, call, ...fields };
  if (ns !== null) meta.ns = ns;
  return new Promise((resolve, reject) => {
    kvPending.set(id, [resolve, reject, op]);
    if (loopWaiters.size > 0) holdLoop();
    send(KV_REQUEST, id, JSON.stringify(meta), body);
  });
}

function kvReplied(id, meta, body) {
  const waiter = kvPending.get(id);
  if (!waiter) return;
  kvPending.delete(id);
  if (loopWaiters.size > 0) holdLoop();
  const [resolve, reject, op] = waiter;
  if (!meta.ok) {
    reject(new KvError(meta.errorType || 'KvUnavailable', meta.errorMessage || ''));
    return;
  }
  switch (op) {
    case 'get':
      resolve(meta.found ? { value: JSON.parse(body.toString('utf8')), version: meta.version } : null);
      break;
    case 'put':
      resolve(meta.version);
      break;
    case 'incr':
      resolve(meta.value);
      break;
    case 'delete':
      resolve(meta.deleted);
      break;
    default:
      resolve({ items: JSON.parse(body.toString('utf8')), cursor: meta.cursor || null });
  }
}

function kvFail(type, message) {
  return Promise.reject(new KvError(type, message));
}

function makeKv(call, ns) {
  const badKey = (k) => typeof k !== 'string';
  const keyError = () => kvFail('KvInvalidKey', 'a key must be a string');
  const getWithVersion = (k) => (badKey(k) ? keyError() : kvRequest(call, ns, 'get', { key: k }));
  return {
    getWithVersion,
    async get(k) {
      const item = await getWithVersion(k);
      return item === null ? null : item.value;
    },
    put(k, value, options = {}) {
      if (badKey(k)) return keyError();
      let text;
      try {
        text = JSON.stringify(value);
      } catch (err) {
        return kvFail('KvInvalidValue', `the value cannot be written as JSON: ${err.message}`);
      }
      if (text === undefined) return kvFail('KvInvalidValue', 'the value cannot be written as JSON');
      const fields = { key: k };
      if (options && options.ttl_s !== undefined) fields.ttl_s = options.ttl_s;
      if (options && options.if_version !== undefined) fields.if_version = options.if_version;
      return kvRequest(call, ns, 'put', fields, text);
    },
    incr(k, delta = 1) {
      if (badKey(k)) return keyError();
      if (!Number.isSafeInteger(delta)) return kvFail('KvInvalidRequest', 'delta must be an integer');
      return kvRequest(call, ns, 'incr', { key: k, delta });
    },
    delete(k) {
      return badKey(k) ? keyError() : kvRequest(call, ns, 'delete', { key: k });
    },
    list(prefix = '', options = {}) {
      if (typeof prefix !== 'string') return kvFail('KvInvalidRequest', 'a prefix must be a string');
      const fields = { prefix };
      if (options && options.limit !== undefined) fields.limit = options.limit;
      if (options && options.cursor) fields.cursor = options.cursor;
      return kvRequest(call, ns, 'list', fields);
    },
    namespace(name) {
      return makeKv(call, String(name));
    },
  };
}

// Calls of other functions (docs/events.md#function-to-function): an INVOKE_REQUEST naming the
// call it is made for, answered by an INVOKE_REPLY of the same id.
class InvokeError extends Error {
  constructor(meta, body) {
    super(typeof meta.errorMessage === 'string' ? meta.errorMessage : '');
    this.name = typeof meta.errorType === 'string' ? meta.errorType : 'ServiceException';
    this.errorType = this.name;
    if (meta.functionError) {
      // The called function failed: its own error object, as Lambda's Invoke returns it.
      this.functionError = meta.functionError;
      this.requestId = meta.requestId;
      try {
        this.error = JSON.parse(body.toString('utf8'));
      } catch {
        this.error = null;
      }
    }
  }
}

const invokePending = new Map();  // request id -> [resolve, reject, async]

function invokeFunction(call, name, event, options) {
  const async = Boolean(options && options.async);
  let target = name;
  if (options && options.qualifier !== undefined) target = `${name}:${options.qualifier}`;
  let text;
  try {
    text = event === undefined ? '{}' : JSON.stringify(event);
  } catch {
    text = undefined;
  }
  if (typeof target !== 'string' || text === undefined) {
    return Promise.reject(new InvokeError({
      errorType: typeof target !== 'string' ? 'InvalidParameterValueException'
        : 'InvalidRequestContentException',
      errorMessage: typeof target !== 'string' ? 'the function name must be a string'
        : 'the event cannot be written as JSON',
    }));
  }
  const id = newRequestId();
  return new Promise((resolve, reject) => {
    invokePending.set(id, [resolve, reject, async]);
    if (loopWaiters.size > 0) holdLoop();
    send(INVOKE_REQUEST, id, JSON.stringify({ call, function: target, async }), text);
  });
}

function invokeReplied(id, meta, body) {
  const waiter = invokePending.get(id);
  if (!waiter) return;
  invokePending.delete(id);
  if (loopWaiters.size > 0) holdLoop();
  const [resolve, reject, async] = waiter;
  if (!meta.ok) {
    reject(new InvokeError(meta, body));
  } else if (async) {
    resolve({ id: meta.id });
  } else if (typeof meta.contentType === 'string') {
    resolve(body.toString('utf8'));  // a custom runtime's raw answer
  } else {
    try {
      resolve(JSON.parse(body.toString('utf8')));
    } catch (err) {
      reject(new InvokeError({ errorType: 'ServiceException', errorMessage: err.message }));
    }
  }
}

// Calls whose handler returned neither a value nor a promise and has not answered yet (through
// the callback, context.succeed, fail or done): Lambda answers them with null once the event loop
// is empty. The channel is the one handle that always keeps the loop alive, so while such calls
// wait and no key-value reply is due it stops counting, and 'beforeExit' tells when nothing else
// is left to run.
const loopWaiters = new Set();  // their settle functions
function holdLoop() {
  if (loopWaiters.size > 0 && kvPending.size === 0 && invokePending.size === 0) {
    channel.unref();
  } else {
    channel.ref();
  }
}
process.on('beforeExit', () => {
  channel.ref();
  for (const settle of loopWaiters) settle(false, null);
});

// Lambda's context: its fields as own properties, as in Lambda (logging the context shows them),
// and its functions bound to the call, since handlers pass them around
// (`promise.then(context.succeed, context.fail)`). Ember's key-value store is made on first use.
class Context {
  #call;
  #kv = null;

  constructor(id, meta, settle) {
    // The timeout runs from the call's start, here, not from when the daemon sent it.
    const deadlineMs =
      typeof meta.timeoutMs === 'number' ? Date.now() + meta.timeoutMs : meta.deadlineMs || 0;
    this.callbackWaitsForEmptyEventLoop = true;  // read by no one: answers never wait for the loop
    this.functionName = functionName;
    this.functionVersion = functionVersion;
    this.invokedFunctionArn =
      typeof meta.qualifier === 'string' ? `${functionArn}:${meta.qualifier}` : functionArn;
    this.memoryLimitInMB = memoryLimitInMB;
    this.awsRequestId = meta.requestId;
    this.logGroupName = logGroupName;
    this.logStreamName = logStreamName;
    this.identity = undefined;
    this.clientContext = undefined;
    this.requestId = meta.requestId;
    this.memoryLimitMB = memoryLimitMB;
    this.getRemainingTimeInMillis = () => Math.max(0, deadlineMs - Date.now());
    // Lambda's legacy API. The callback is `done`; fail() without an error fails with 'handled'.
    this.done = (err, result) =>
      (err !== undefined && err !== null ? settle(true, err) : settle(false, result));
    this.succeed = (result) => settle(false, result);
    this.fail = (err) => settle(true, err === undefined || err === null ? 'handled' : err);
    this.#call = id;
  }

  get kv() {
    return (this.#kv ??= makeKv(this.#call, null));
  }

  // Calls another function: resolves with its value, or with {id} of the queued event when
  // options.async; rejects with an InvokeError.
  invoke(name, event, options) {
    return invokeFunction(this.#call, name, event, options);
  }

  set kv(value) {
    Object.defineProperty(this, 'kv',
      { value, writable: true, enumerable: true, configurable: true });
  }
}

// Runs the handler for one call; the first of its promise, callback, context.succeed, fail or
// done (or the empty event loop, see loopWaiters) to settle is the answer, later ones are ignored.
// A plain value returned by a handler that takes no callback is the answer too (Lambda ignores
// it and waits for the loop); `undefined` is no answer.
function run(id, meta, body, resolve, reject) {
  let answered = false;
  const settle = (failed, value) => {
    if (answered) return;
    answered = true;
    if (loopWaiters.size > 0 && loopWaiters.delete(settle)) holdLoop();
    if (failed) {
      reject(value);
    } else {
      resolve(value);
    }
  };
  try {
    const event = JSON.parse(body.toString('utf8'));
    const context = new Context(id, meta, settle);
    const returned = handlerTakesCallback
      ? handler(event, context, context.done)
      : handler(event, context);
    if (returned !== null && (typeof returned === 'object' || typeof returned === 'function') &&
        typeof returned.then === 'function') {
      returned.then((value) => settle(false, value), (err) => settle(true, err));
    } else if (returned !== undefined && !handlerTakesCallback) {
      settle(false, returned);
    } else if (!answered) {
      loopWaiters.add(settle);
      holdLoop();
    }
  } catch (err) {
    settle(true, err);
  }
}

// Node queues writes to a full pipe in memory; the answer must not overtake the output, or the
// daemon could not attribute those lines to this call. Resolves once both streams are drained.
function flushStdio() {
  if (stdout.writableLength === 0 && stderr.writableLength === 0) return null;
  const pending = [stdout, stderr]
    .filter((s) => s.writableLength > 0)
    .map((s) => new Promise((resolve) => s.write('', resolve)));
  return Promise.all(pending);
}

async function invoke(id, meta, body) {
  inFlight++;
  try {
    const value = await new Promise((resolve, reject) => run(id, meta, body, resolve, reject));
    const text = JSON.stringify(value === undefined ? null : value);
    const flushed = flushStdio();
    if (flushed) await flushed;
    send(RESULT, id, '{}', text === undefined ? 'null' : text);
  } catch (err) {
    await reportError(id, meta.requestId, err);
  } finally {
    inFlight--;
    if (waiting.length > 0) {
      invoke(...waiting.shift());
    } else if (shuttingDown && inFlight === 0) {
      exitWhenSent(0);
    }
  }
}

// Chunks are joined only once a whole frame has arrived, so a 6 MB event costs one copy.
// Reassembles frames from a stream's chunks and hands each to `onFrame(type, id, meta, body)`.
function frames(onFrame) {
  let chunks = [];
  let length = 0;
  let need = HEADER_BYTES;  // bytes needed before the next step: a header, then a whole frame
  let frameBytes = 0;       // size of the frame whose header was read, 0 before that
  return (chunk) => {
    chunks.push(chunk);
    length += chunk.length;
    while (length >= need) {
      const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, length);
      chunks = [buf];
      if (frameBytes === 0) {
        const metaLen = buf.readUInt32LE(8);
        const bodyLen = buf.readUInt32LE(12);
        if (metaLen > MAX_META || bodyLen > MAX_BODY) process.exit(70);
        frameBytes = HEADER_BYTES + metaLen + bodyLen;
        need = frameBytes;
        continue;
      }
      const type = buf.readUInt32LE(0);
      const id = buf.readUInt32LE(4);
      const metaEnd = HEADER_BYTES + buf.readUInt32LE(8);
      const meta = JSON.parse(buf.toString('utf8', HEADER_BYTES, metaEnd));
      const body = buf.subarray(metaEnd, frameBytes);
      const rest = buf.subarray(frameBytes);
      chunks = rest.length ? [rest] : [];
      length = rest.length;
      frameBytes = 0;
      need = HEADER_BYTES;
      onFrame(type, id, meta, body);
    }
  };
}

function handleFrame(type, id, meta, body) {
  if (type === KV_REPLY) {
    kvReplied(id, meta, body);
  } else if (type === INVOKE_REPLY) {
    invokeReplied(id, meta, body);
  } else if (type === INVOKE) {
    if (handlerReady && inFlight < concurrency) {
      invoke(id, meta, body);
    } else {
      waiting.push([id, meta, body]);
    }
  } else if (type === SHUTDOWN) {
    shuttingDown = true;
    if (inFlight === 0) exitWhenSent(0);
  } else if (type === LOAD && awaitingLoad) {
    awaitingLoad = false;
    awaitingMount = true;
    applyLoad(meta);
  } else if (type === MOUNTED && awaitingMount) {
    awaitingMount = false;
    start(true);
  }
}

function serve() {
  channel.on('data', frames(handleFrame));
}

channel.on('end', () => process.exit(0));
channel.on('error', () => process.exit(0));

// A pooled worker's function: its environment from LOAD's meta, as a worker started for it would
// have had it. Its bundle is mounted while the worker takes this in; MOUNTED says it is there.
// A variable that already has its value is not set again: setting TZ, even to the zone it
// names already, makes V8 reload its time zone data, which took most of LOAD's time.
function applyLoad(meta) {
  const vars = meta.env;
  if (vars !== null && typeof vars === 'object') {
    for (const name of Object.keys(vars)) {
      if (env[name] !== vars[name]) env[name] = vars[name];
    }
  }
  delete env.EMBER_POOLED;
}

// Loads the handler and sends READY; or, when that fails, INIT_ERROR, and exits. `pooled`: a
// pooled worker, given its function by LOAD, whose bundle MOUNTED has said is mounted. It enters
// the bundle only now: a directory entered before would be the empty one beneath.
async function start(pooled) {
  let loaded;
  try {
    if (pooled) process.chdir(env.LAMBDA_TASK_ROOT);
    configure();
    loaded = await loadHandler(env._HANDLER || 'index.handler');
  } catch (err) {
    // Lambda logs the error as uncaught, with no request id, before it reports it.
    let metaText;
    try {
      metaText = errorMeta(err);
      logError(undefined, 'Uncaught Exception', metaText);
    } catch {
      metaText = LAST_RESORT_META.toString();
    }
    const flushed = flushStdio();
    if (flushed) await flushed;
    send(INIT_ERROR, 0, metaText);
    channel.end(() => process.exit(1));
    return;
  }
  handler = loaded;
  handlerTakesCallback = loaded.length >= 3;
  send(READY, 0, '{}');
  // The daemon may have sent the first calls behind LOAD, without waiting for READY.
  handlerReady = true;
  while (inFlight < concurrency && waiting.length > 0) invoke(...waiting.shift());
}

// The first frame read from a socket costs Node most of a millisecond (its stream machinery runs
// for the first time). A pooled worker reads one through the same code from a socket of its own
// before it waits, so that LOAD does not pay it.
function warmReads(dir) {
  return new Promise((resolve) => {
    const file = path.join(dir, 'warm.sock');
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      server.close(() => {});
      resolve();
    };
    setTimeout(done, 1000).unref();  // a warm-up never holds the worker back
    const server = net.createServer((peer) => {
      const frame = Buffer.alloc(HEADER_BYTES + 2);
      frame.writeUInt32LE(2, 8);
      frame.write('{}', HEADER_BYTES);
      peer.end(frame);
    });
    server.on('error', done);
    server.listen(file, () => {
      const client = net.connect(file);
      client.on('data', frames(() => {
        client.destroy();
        done();
      }));
      client.on('error', done);
    });
  });
}

// A pooled worker loads a handler of each kind (CommonJS, then an ES module) from its private
// /tmp, and calls it once, before it waits: the first load through each of Node's loaders, and the
// first call, cost milliseconds that the function's own then no longer pay. The files go; the ES
// module loader keeps its throwaway entry, which nothing can name. A failure only means a colder
// start later.
async function warmLoaders() {
  let dir = null;
  try {
    dir = fs.mkdtempSync(path.join(env.TMPDIR || '/tmp', '.ember-warm-'));
    await warmReads(dir);
    fs.writeFileSync(path.join(dir, 'warm.js'), 'exports.handler = async () => null;\n');
    fs.writeFileSync(path.join(dir, 'warm.mjs'), 'export const handler = async () => null;\n');
    taskRoot = dir;
    handler = await loadHandler('warm.handler');
    await import(pathToFileURL(path.join(dir, 'warm.mjs')).href);
    // And one call of it, answered to no one: the call path is compiled before the first real
    // call needs it.
    const value = await new Promise((resolve, reject) =>
      run(0, { requestId: '', deadlineMs: 0 }, Buffer.from('{}'), resolve, reject));
    JSON.stringify(value === undefined ? null : value);
  } catch {
    // A colder first load, nothing worse.
  } finally {
    taskRoot = '';
    handler = null;
    if (dir !== null) fs.rmSync(dir, { recursive: true, force: true });
  }
}

serve();
if (awaitingLoad) {
  warmLoaders().then(() => send(READY, 0, '{"pooled":true}'));
} else {
  start();
}
