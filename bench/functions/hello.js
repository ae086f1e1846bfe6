// The benchmark handler for Node: small JSON in, small JSON out. Ember runs it as a function;
// servers/direct.js serves the very same file over Node's own HTTP server.
exports.handler = async (event) => ({ hello: (event && event.name) || 'world', n: 1 });
