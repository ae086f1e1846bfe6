// A page-view counter kept in a global. On a warm instance it keeps growing; when the instance
// is scaled to zero and a cold one starts, it begins again at 1. That is the stateless rule:
// globals are a cache, durable state belongs in context.kv.
let views = 0;

exports.handler = async (event, context) => {
  views += 1;
  return { views, requestId: context.requestId };
};
