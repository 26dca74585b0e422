#!/usr/bin/env python3
"""Proves that the build enforces the module dependency rule (docs/architecture.md): for each
library under src/, a header of a module it may not use is not found on its include path, and
one it may use is. The build's include directories are what enforce the rule (CMakeLists.txt,
tp_library); this test keeps that mechanism from quietly eroding (a catch-all -Isrc added back,
say). It preprocesses one-line files with each library's own compile flags, read from
compile_commands.json. Run by ctest (lint.module_boundaries).

Usage: check_module_boundaries.py BUILD_DIR
"""

import json
import os
import shlex
import subprocess
import sys
import tempfile

# module: (headers it must see, headers it must not see)
RULES = {
    "http": (["turnpike/http/stream.h", "support/deadline.h"],
             ["http1/parser.h", "turnpike/config/config.h", "proxy/proxy.h"]),
    "http1": (["turnpike/http/stream.h", "http1/parser.h"],
              ["turnpike/config/config.h", "tls/client_context.h", "upstream/cluster_pool.h",
               "proxy/proxy.h", "http2/settings.h", "core/server.h"]),
    "http2": (["turnpike/http/client_stream.h", "http2/settings.h"],
              ["turnpike/config/config.h", "tls/client_context.h", "upstream/cluster_pool.h",
               "http1/parser.h", "proxy/proxy.h"]),
    "router": (["turnpike/config/config.h", "turnpike/http/path.h"],
               ["upstream/cluster_pool.h", "turnpike/filters/filter.h", "proxy/proxy.h"]),
    "filters": (["turnpike/filters/filter.h", "turnpike/config/reader.h"],
                ["turnpike/router/route_table.h", "upstream/cluster_pool.h", "proxy/proxy.h",
                 "http1/parser.h"]),
    "upstream": (["http1/client_connection.h", "http2/client_connection.h",
                  "tls/client_context.h"],
                 ["proxy/request.h", "core/server.h", "turnpike/router/route_table.h"]),
    "proxy": (["upstream/cluster_pool.h", "turnpike/router/route_table.h",
               "turnpike/filters/filter.h"],
              ["core/server.h", "admin/admin_server.h", "http1/client_connection.h",
               "http2/server_connection.h"]),
    "admin": (["turnpike/router/route_table.h", "turnpike/config/to_json.h"],
              ["core/server.h", "proxy/snapshot.h", "proxy/proxy.h"]),
    "core": (["proxy/proxy.h", "admin/admin_server.h", "http1/server_connection.h"], []),
}


def flags_for(commands, module):
    """The -I/-D/-std flags of one translation unit of `module`."""
    marker = "/src/%s/" % module
    for entry in commands:
        if marker in entry["file"]:
            args = entry.get("arguments") or shlex.split(entry["command"])
            keep = []
            i = 0
            while i < len(args):
                a = args[i]
                if a in ("-I", "-D", "-isystem"):
                    keep += [a, args[i + 1]]
                    i += 2
                    continue
                if a.startswith(("-I", "-D", "-std=", "-isystem")) or a == "-pthread":
                    keep.append(a)
                i += 1
            return keep
    return None


def found(compiler, flags, header):
    with tempfile.NamedTemporaryFile("w", suffix=".cpp", delete=False) as f:
        f.write('#include "%s"\n' % header)
        path = f.name
    try:
        r = subprocess.run([compiler, "-E", "-o", os.devnull] + flags + [path],
                           capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            return True
        if "No such file or directory" in r.stderr and header in r.stderr:
            return False
        raise RuntimeError("preprocessing %s failed for another reason:\n%s" % (header, r.stderr))
    finally:
        os.unlink(path)


def main():
    build = sys.argv[1]
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    compiler = os.environ.get("CXX", "c++")
    problems = []
    for module, (allowed, forbidden) in RULES.items():
        flags = flags_for(commands, module)
        if flags is None:
            problems.append("%s: no translation unit in compile_commands.json" % module)
            continue
        for h in allowed:
            if not found(compiler, flags, h):
                problems.append("%s should see %s but does not" % (module, h))
        for h in forbidden:
            if found(compiler, flags, h):
                problems.append("%s can include %s: the dependency rule is not enforced" %
                                (module, h))
    if problems:
        print("\n".join(problems))
        return 1
    print("module boundaries: %d modules checked" % len(RULES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
