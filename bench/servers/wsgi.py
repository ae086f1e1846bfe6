"""The benchmark handler as a WSGI application, for uWSGI (the burst reference)."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "functions"))
from hello import handler  # noqa: E402


def application(environ, start_response):
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        event = json.loads(environ["wsgi.input"].read(length) or b"{}")
    except ValueError:
        event = {}
    body = json.dumps(handler(event)).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
