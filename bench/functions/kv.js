// The key-value benchmark handler: `n` increments of one key in sequence, each timed from inside
// the function; returns the latencies in microseconds. The same hot key as redis-benchmark's
// `-t incr` (without -r), so both sides serialise on one counter.
exports.handler = async (event, context) => {
  const n = (event && event.n) || 20;
  const latencies = new Array(n);
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    await context.kv.incr('counter');
    latencies[i] = Number(process.hrtime.bigint() - t0) / 1000;
  }
  return latencies;
};
