// A page-view counter on the key-value store: `incr` is atomic and durable, so the count keeps
// growing across cold starts, concurrent instances and restarts of the daemon. The global
// beside it only counts what this one instance has seen, and starts again at 1 whenever the
// instance is scaled to zero: globals are a cache, state belongs in context.kv.
let seenHere = 0;

exports.handler = async (event, context) => {
  seenHere += 1;
  const views = await context.kv.incr('views');
  return { views, seenByThisInstance: seenHere, requestId: context.requestId };
};
