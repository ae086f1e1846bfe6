"""Compiles a Python function's bundle to bytecode once per version, so that its workers load
.pyc files instead of compiling every module at every cold start (docs/functions.md#python).

emberd runs it sandboxed as the function, with the bundle read-only: `compile.py TASK_ROOT`.
It never imports or runs the bundle's code (compiling only parses it), and writes nothing but
its standard output: the interpreter's cache tag, then for each module it compiled the module's
path in the bundle and the bytes of its .pyc. emberd checks each path and stores the .pyc beside
its module, in __pycache__, where the import system looks for it. A module that does not compile
is left out: importing it then fails in the worker as it would have without this.

Output, little-endian: u32 length + the cache tag (e.g. cpython-311); then records of
u32 path length, u32 data length, the path (relative to TASK_ROOT, UTF-8), the data.
"""

import importlib.util
import marshal
import os
import stat
import struct
import sys

MAX_MODULES = 20000
MAX_SOURCE_BYTES = 8 * 1024 * 1024


def pyc(code, st):
    """What the import system writes for `code` compiled from a source with stat `st`: a .pyc
    checked against the source's modification time and size (PEP 552, flags 0)."""
    header = struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    return importlib.util.MAGIC_NUMBER + header + marshal.dumps(code)


def modules(root):
    """The .py files of the bundle, in a stable order; no link is followed."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                yield os.path.join(directory, name)


def main(argv):
    if len(argv) != 2 or not sys.implementation.cache_tag:
        return 2
    root = argv[1]
    out = sys.stdout.buffer
    tag = sys.implementation.cache_tag.encode()
    out.write(struct.pack("<I", len(tag)) + tag)
    done = 0
    for path in modules(root):
        if done == MAX_MODULES:
            break
        try:
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SOURCE_BYTES:
                continue
            with open(path, "rb") as f:
                source = f.read()
            # As SourceLoader.source_to_code compiles it, under the name the worker imports.
            code = compile(source, path, "exec", dont_inherit=True)
            data = pyc(code, st)
        except (SyntaxError, ValueError, OSError, RecursionError, MemoryError, OverflowError):
            continue
        rel = os.path.relpath(path, root).encode("utf-8", "surrogateescape")
        out.write(struct.pack("<II", len(rel), len(data)) + rel + data)
        done += 1
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
