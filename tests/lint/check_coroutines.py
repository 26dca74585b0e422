#!/usr/bin/env python3
"""Enforces how coroutines may be written in src/: GCC 12 (Debian 12's compiler) builds wrong
coroutine frames for some forms, and the miscompiles show up as crashes far from their cause.
The rules, each seen to break here:

  1. No co_await inside the condition of if / while / for / switch: await into a local first.
  2. No co_await in an expression with && || or ?: (GCC 12 mis-sequences the short-circuit).
  3. No braced-init-list ({...}) in the arguments of an awaited call: its temporaries are
     destroyed wrongly across the suspension. Name the value first.

So a co_await appears only as a statement of its own, an initializer, the right side of an
assignment, or a co_return operand. Run by ctest (lint.coroutines); prints file:line: rule.

Usage: check_coroutines.py [ROOT]  (default: the repository root)
"""

import os
import re
import sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))

CONTROL = {"if", "while", "for", "switch"}


def blank_literals_and_comments(text):
    """The source with comments, string and char literals replaced by spaces (newlines kept),
    so that positions and line numbers stay the same."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "R" and text.startswith('R"', i) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'R"([^(\s]*)\(', text[i:])
            if not m:
                out.append(c)
                i += 1
                continue
            end = ")" + m.group(1) + '"'
            j = text.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c in "\"'":
            # A digit separator (1'000) is not a char literal.
            if c == "'" and i > 0 and text[i - 1].isalnum():
                out.append(c)
                i += 1
                continue
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(c + " " * (j - i - 2) + c if j - i >= 2 else text[i:j])
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def word_before(code, pos):
    j = pos - 1
    while j >= 0 and code[j].isspace():
        j -= 1
    k = j
    while k >= 0 and (code[k].isalnum() or code[k] == "_"):
        k -= 1
    return code[k + 1:j + 1]


def matching(code, pos, open_c, close_c):
    depth = 0
    for j in range(pos, len(code)):
        if code[j] == open_c:
            depth += 1
        elif code[j] == close_c:
            depth -= 1
            if depth == 0:
                return j
    return len(code) - 1


def operand_end(code, pos):
    """End of the awaited operand that starts at pos: a name with member access, calls and
    subscripts (a.b->c(x)[i](y))."""
    j = pos
    n = len(code)
    while j < n:
        while j < n and code[j].isspace():
            j += 1
        if j < n and (code[j].isalnum() or code[j] in "_:"):
            while j < n and (code[j].isalnum() or code[j] in "_:"):
                j += 1
        elif code.startswith("->", j):
            j += 2
        elif j < n and code[j] == ".":
            j += 1
        elif j < n and code[j] in "([":
            j = matching(code, j, code[j], ")" if code[j] == "(" else "]") + 1
        elif j < n and code[j] in "!*&":
            j += 1
        else:
            break
    return j


def short_circuit_around(code, pos, end):
    """Whether && or || joins the co_await at pos (its operand ends at end) with something
    else in the same expression."""
    # Backwards to the start of the expression.
    depth = 0
    j = pos - 1
    while j >= 0:
        ch = code[j]
        if ch in ")]":
            depth += 1
        elif ch in "([":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0:
            if ch in ";{},":
                break
            if ch == "=" and code[j - 1] not in "=!<>" and code[j + 1] != "=":
                break
            if code.startswith("&&", j - 1) or code.startswith("||", j - 1) or ch == "?":
                return True
        j -= 1
    # Forwards to its end.
    depth = 0
    j = end
    while j < len(code):
        ch = code[j]
        if ch in "([":
            depth += 1
        elif ch in ")]":
            if depth == 0:
                break
            depth -= 1
        elif depth == 0:
            if ch in ";{},":
                break
            if code.startswith("&&", j) or code.startswith("||", j) or ch == "?":
                return True
        j += 1
    return False


def check_file(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    code = blank_literals_and_comments(text)
    problems = []

    # Which parentheses are control-statement conditions.
    cond_ranges = []
    for m in re.finditer(r"\(", code):
        if word_before(code, m.start()) in CONTROL:
            cond_ranges.append((m.start(), matching(code, m.start(), "(", ")")))

    for m in re.finditer(r"\bco_await\b", code):
        pos = m.start()
        line = code.count("\n", 0, pos) + 1
        where = "%s:%d" % (os.path.relpath(path, ROOT), line)
        if any(a < pos < b for a, b in cond_ranges):
            problems.append(where + ": co_await in an if/while/for/switch condition"
                            " (await into a local first)")
            continue
        end = operand_end(code, m.end())
        if short_circuit_around(code, pos, end):
            problems.append(where + ": co_await in an expression with && || or ?:"
                            " (await into a local first)")
            continue
        if "{" in code[m.end():end]:
            problems.append(where + ": braced-init-list in the arguments of an awaited call"
                            " (name the value first)")
    return problems


# Each must be caught (the lint's own test: a rule that catches nothing is no rule).
BAD = [
    "if (co_await f()) x();",
    "while (!co_await f(a, b)) {}",
    "if (auto ec = co_await g()) return;",
    "bool b = ok && co_await f();",
    "x = co_await f() || y;",
    "v = c ? co_await f() : 0;",
    "co_await send(out, {buf, n}, true);",
    "co_await reply(x, {}, {});",
]
GOOD = [
    "const bool ok = co_await f(a && b, c);",
    "if (!ec && trailers) ec = co_await send(t, x);",
    "co_return co_await g(std::span<const char>(), true);",
    "auto r = co_await s.read(span.first(n), t); if (r.ec) return;",
    'const auto s = R"(if (co_await x) {})";',
    "// if (co_await f()) {}",
]


def self_test():
    import tempfile
    failures = []
    with tempfile.TemporaryDirectory() as d:
        for i, snippet in enumerate(BAD + GOOD):
            path = os.path.join(d, "case%d.cpp" % i)
            with open(path, "w") as f:
                f.write("void f() {\n  " + snippet + "\n}\n")
            found = check_file(path)
            if (snippet in BAD) != bool(found):
                failures.append("%s: %s" % ("missed" if snippet in BAD else "false alarm", snippet))
    return failures


def main():
    failures = self_test()
    if failures:
        print("check_coroutines.py is broken:\n" + "\n".join(failures))
        return 2
    problems = []
    for base, _, files in os.walk(os.path.join(ROOT, "src")):
        for name in sorted(files):
            if name.endswith((".cpp", ".h")):
                problems += check_file(os.path.join(base, name))
    if problems:
        print("GCC 12 coroutine rules (see tests/lint/check_coroutines.py for why):")
        print("\n".join(problems))
        print("%d problem(s)" % len(problems))
        return 1
    print("coroutine rules: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
