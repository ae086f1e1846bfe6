// The reference for Ember's Node numbers: the benchmark handler behind Node's own HTTP server.
// Prints "listening PORT" once it accepts connections on 127.0.0.1.
const http = require('http');
const { handler } = require('../functions/hello.js');

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', async () => {
    let event = {};
    try { event = JSON.parse(Buffer.concat(chunks).toString() || '{}'); } catch (e) {}
    const body = JSON.stringify(await handler(event));
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
  console.log('listening ' + server.address().port);
});
