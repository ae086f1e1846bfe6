#!/usr/bin/python3
"""The benchmark handler as a CGI program: a new Python process per request (nginx + fcgiwrap),
the fork-per-request reference."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "functions"))
from hello import handler  # noqa: E402

length = int(os.environ.get("CONTENT_LENGTH") or 0)
try:
    event = json.loads(sys.stdin.read(length) or "{}")
except ValueError:
    event = {}
body = json.dumps(handler(event))
sys.stdout.write("Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
