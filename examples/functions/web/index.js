// An HTTP-trigger function: served at /fn/web/..., it answers with an HTML page.
const escapeHtml = (s) =>
  String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);

exports.handler = async (event) => ({
  statusCode: 200,
  headers: { 'content-type': 'text/html; charset=utf-8' },
  body: `<!doctype html>
<html><head><title>Ember</title></head>
<body><h1>Hello from Ember</h1>
<p>${escapeHtml(event.method)} ${escapeHtml(event.path)}</p></body></html>
`,
});
