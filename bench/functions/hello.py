# The benchmark handler for Python: small JSON in, small JSON out. Ember runs it as a function;
# servers/direct.py and servers/wsgi.py serve the very same code.
def handler(event, context=None):
    name = event.get("name", "world") if isinstance(event, dict) else "world"
    return {"hello": name, "n": 1}
