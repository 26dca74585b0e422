"""Fails when asio::detached appears in the given source tree (default: src/).

A coroutine spawned with asio::detached that ends by an exception vanishes without a trace: a
worker could stop accepting connections and nothing would say so. Spawn with a completion
handler from src/support/spawn.h instead:

    co_spawn(ex, coro(), support::log_exception("what it is"));             // log it
    co_spawn(ex, coro(), support::log_exception("what", [w] { close }));   // log, then clean up
    support::spawn_restarting(ex, name, backoff, make, keep_going);         // log and restart

Usage: no_detached.py [DIR...]     (ctest: lint.no_detached)
       no_detached.py --self-test  (ctest: lint.no_detached_self_test)
"""

import os
import re
import sys
import tempfile

EXTENSIONS = (".h", ".hpp", ".cpp", ".cc", ".ipp", ".inl")
FORBIDDEN = re.compile(r"::\s*detached(_t)?\b|\bdetached_t\b|asio/detached\.hpp|,\s*detached\s*\)")
ADVICE = ("asio::detached drops the exception that ends a coroutine without a trace. Use a "
          "handler from src/support/spawn.h: support::log_exception(\"name\"[, on_failure]) "
          "for co_spawn, or support::spawn_restarting(...) for a loop that must keep running.")


def strip_comments(text):
    """The text with // and /* */ comments blanked (newlines kept, so line numbers hold)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":  # a string or character literal: copied as is, escapes honoured
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch for ch in text[i:j] if ch == "\n"))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def violations(root):
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(EXTENSIONS):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                code = strip_comments(f.read())
            for lineno, line in enumerate(code.splitlines(), 1):
                if FORBIDDEN.search(line):
                    found.append((path, lineno, line.strip()))
    return found


def check(roots):
    found = [v for root in roots for v in violations(root)]
    for path, lineno, line in found:
        print("%s:%d: asio::detached: %s" % (os.path.normpath(path), lineno, line))
    if found:
        print("%d use(s) of asio::detached. %s" % (len(found), ADVICE))
        return 1
    print("no asio::detached in %s" % ", ".join(roots))
    return 0


def self_test():
    bad = {
        "a.cpp": "#include <boost/asio/detached.hpp>\n"
                 "void f() { asio::co_spawn(ex, g(), asio::detached); }\n",
        "b.h": "inline void f() {\n  boost::asio::co_spawn(ex, g(),\n"
               "      boost::asio :: detached);\n}\n",
        "c.cpp": "using boost::asio::detached;\nvoid f() { co_spawn(ex, g(), detached); }\n",
    }
    good = {
        "d.cpp": "// not asio::detached: it drops exceptions\n"
                 "/* asio::detached\n   boost/asio/detached.hpp */\n"
                 "void f() { co_spawn(ex, g(), support::log_exception(\"g\")); }\n"
                 "const char* s = \"a detached thread\";\n",
    }
    with tempfile.TemporaryDirectory() as d:
        for name, text in list(bad.items()) + list(good.items()):
            with open(os.path.join(d, name), "w") as f:
                f.write(text)
        got = sorted((os.path.basename(p), line) for p, line, _ in violations(d))
    want = [("a.cpp", 1), ("a.cpp", 2), ("b.h", 3), ("c.cpp", 1), ("c.cpp", 2)]
    if got != want:
        print("self-test failed: found %r, expected %r" % (got, want))
        return 1
    print("self-test passed")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    roots = argv[1:] or [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                      "src")]
    return check(roots)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
