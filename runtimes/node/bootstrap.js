'use strict';
// Ember's Node.js runtime shim. Loads the function's handler, then serves invocations over the
// frames of docs/worker-protocol.md on fd 3. stdout and stderr are the function's own.

const fs = require('fs');
const net = require('net');
const path = require('path');
const Module = require('module');
const { pathToFileURL } = require('url');

const READY = 1;
const INIT_ERROR = 2;
const INVOKE = 3;
const RESULT = 4;
const ERROR = 5;
const KV_REQUEST = 6;
const KV_REPLY = 7;
const SHUTDOWN = 8;
const HEADER_BYTES = 16;
const MAX_META = 64 * 1024;
const MAX_BODY = 64 * 1024 * 1024;

const env = process.env;
const taskRoot = env.LAMBDA_TASK_ROOT || process.cwd();
const functionName = env.EMBER_FUNCTION_NAME || '';
const functionVersion = env.EMBER_FUNCTION_VERSION || '';
const memoryLimitMB = Number(env.EMBER_MEMORY_MB || 0);
// Calls served at once; the daemon may send more, which wait here and start in order.
const concurrency = Math.max(1, Math.floor(Number(env.EMBER_CONCURRENCY || 1)) || 1);

const channel = new net.Socket({ fd: 3, readable: true, writable: true });
let inFlight = 0;
let shuttingDown = false;
const waiting = [];  // [id, meta, body] of INVOKEs past `concurrency`
let handler = null;  // set once loaded; INVOKEs come only after READY

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

function send(type, id, meta, body) {
  const metaBuf = Buffer.from(JSON.stringify(meta || {}));
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
  if (type !== KV_REQUEST) uncorkChannel();
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

function describe(err) {
  if (err instanceof Error) {
    return {
      errorType: safely(() => err.name, 'Error') || 'Error',
      errorMessage: safely(() => err.message, ''),
      stack: safely(() => String(err.stack || ''), '').split('\n'),
    };
  }
  return { errorType: 'Error', errorMessage: safely(() => String(err), '<unprintable value>'), stack: [] };
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

function reportError(id, err) {
  try {
    send(ERROR, id, describe(err));
  } catch {
    LAST_RESORT_HEADER.writeUInt32LE(id, 4);
    channel.cork();
    channel.write(Buffer.from(LAST_RESORT_HEADER));
    channel.write(LAST_RESORT_META);
    channel.uncork();
  }
}

// Loads `file.export` from the task root. A CommonJS file that only declares a top-level
// `function export(...)` works too: the file is compiled once with a trailer that exports the
// declaration when nothing else was exported under that name.
async function loadHandler(spec) {
  const dot = spec.lastIndexOf('.');
  const file = spec.slice(0, dot);
  const name = spec.slice(dot + 1);
  let found = null;
  for (const ext of ['.js', '.mjs', '.cjs']) {
    const candidate = path.join(taskRoot, file + ext);
    if (fs.existsSync(candidate)) {
      found = candidate;
      break;
    }
  }
  if (!found) throw Object.assign(new Error(`cannot find ${file}.js, .mjs or .cjs`), { name: 'Runtime.ImportModuleError' });

  let exported;
  if (found.endsWith('.mjs')) {
    exported = (await import(pathToFileURL(found).href))[name];
  } else {
    const source = fs.readFileSync(found, 'utf8');
    const mod = new Module(found, null);
    mod.filename = found;
    mod.paths = Module._nodeModulePaths(path.dirname(found));
    const trailer = `\n;if (typeof ${name} === 'function' && module.exports &&` +
      ` !Object.prototype.hasOwnProperty.call(module.exports, '${name}')) {` +
      ` module.exports.${name} = ${name}; }\n`;
    try {
      mod._compile(source + trailer, found);
      exported = mod.exports[name];
    } catch (err) {
      if (err && err.code === 'ERR_REQUIRE_ESM') {
        exported = (await import(pathToFileURL(found).href))[name];
      } else {
        throw err;
      }
    }
  }
  if (typeof exported !== 'function') {
    throw Object.assign(new Error(`${path.basename(found)} does not export a function named ${name}`),
      { name: 'Runtime.HandlerNotFound' });
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
let kvNextId = 1;

function kvRequest(call, ns, op, fields, body) {
  const id = kvNextId;
  kvNextId = kvNextId >= 0xffffffff ? 1 : kvNextId + 1;
  const meta = { op, call, ...fields };
  if (ns !== null) meta.ns = ns;
  return new Promise((resolve, reject) => {
    kvPending.set(id, [resolve, reject, op]);
    send(KV_REQUEST, id, meta, body);
  });
}

function kvReplied(id, meta, body) {
  const waiter = kvPending.get(id);
  if (!waiter) return;
  kvPending.delete(id);
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

function makeContext(meta, call) {
  return {
    requestId: meta.requestId,
    awsRequestId: meta.requestId,
    functionName,
    functionVersion,
    memoryLimitMB,
    memoryLimitInMB: String(memoryLimitMB),
    callbackWaitsForEmptyEventLoop: true,
    kv: makeKv(call, null),
    getRemainingTimeInMillis: () => Math.max(0, (meta.deadlineMs || 0) - Date.now()),
  };
}

// Runs the handler in async or callback style; resolves with its value.
function callHandler(handler, event, context) {
  if (handler.length < 3) return Promise.resolve().then(() => handler(event, context));
  return new Promise((resolve, reject) => {
    const callback = (err, value) => (err ? reject(err) : resolve(value));
    const returned = handler(event, context, callback);
    if (returned && typeof returned.then === 'function') returned.then(resolve, reject);
  });
}

// Node queues writes to a full pipe in memory; the answer must not overtake the output, or the
// daemon could not attribute those lines to this call. Resolves once both streams are drained.
function flushStdio() {
  const pending = [process.stdout, process.stderr]
    .filter((s) => s.writableLength > 0)
    .map((s) => new Promise((resolve) => s.write('', resolve)));
  return pending.length ? Promise.all(pending) : null;
}

async function invoke(id, meta, body) {
  inFlight++;
  try {
    const event = JSON.parse(body.toString('utf8'));
    const value = await callHandler(handler, event, makeContext(meta, id));
    const text = JSON.stringify(value === undefined ? null : value);
    const flushed = flushStdio();
    if (flushed) await flushed;
    send(RESULT, id, {}, text === undefined ? 'null' : text);
  } catch (err) {
    const flushed = flushStdio();
    if (flushed) await flushed;
    reportError(id, err);
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
function serve() {
  let chunks = [];
  let length = 0;
  let need = HEADER_BYTES;  // bytes needed before the next step: a header, then a whole frame
  let frameBytes = 0;       // size of the frame whose header was read, 0 before that
  channel.on('data', (chunk) => {
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
      if (type === KV_REPLY) {
        kvReplied(id, meta, body);
      } else if (type === INVOKE) {
        if (inFlight < concurrency) {
          invoke(id, meta, body);
        } else {
          waiting.push([id, meta, body]);
        }
      } else if (type === SHUTDOWN) {
        shuttingDown = true;
        if (inFlight === 0) exitWhenSent(0);
      }
    }
  });
}

channel.on('end', () => process.exit(0));
channel.on('error', () => process.exit(0));

serve();
loadHandler(env._HANDLER || 'index.handler').then(
  (loaded) => {
    handler = loaded;
    send(READY, 0, {});
  },
  (err) => {
    send(INIT_ERROR, 0, describe(err));
    channel.end(() => process.exit(1));
  },
);
