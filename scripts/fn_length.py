#!/usr/bin/env python3
"""No function over 80 lines outside tests, counting every line from `fn` to its closing brace.

clippy's `too_many_lines` (run by test.sh at clippy.toml's 80) counts only lines with code on
them: blank lines and comment lines are left out, so a function of 86 lines with its `// [B, N, d]`
notes and comments passes it. This check counts what a reader scrolls through.

Skipped: `#[cfg(test)]` modules (to the end of their file, where this project keeps them),
integration tests (`*/tests/*.rs`), and anything vendored. Usage: scripts/fn_length.py [LIMIT]
"""
import pathlib
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 80
ROOTS = ["shared", "trainer/src", "web/src", "tests/src"]
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?((const|async|unsafe|extern\s+\"[^\"]*\")\s+)*fn\s+(\w+)")


def code_only(text):
    """`text` with comments, string and char literals blanked (newlines kept), so that braces
    are counted only where they are code."""
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
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif re.match(r'(b|c)?r(#*)"', text[i:i + 260]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            m = re.match(r'(b|c)?r(#*)"', text[i:])
            close = '"' + m.group(2)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:i + 12]):
            m = re.match(r"'(\\.[^']*|[^\\'])'", text[i:])
            out.append(" " * m.end())
            i += m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


def long_functions(path):
    lines = code_only(path.read_text()).split("\n")
    end = next((k for k, l in enumerate(lines) if l.strip() == "#[cfg(test)]"), len(lines))
    found, i = [], 0
    while i < end:
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        depth, j, opened = 0, i, False
        while j < end:
            segment = lines[j]
            if not opened and ";" in segment and "{" not in segment:
                break  # a declaration without a body
            for ch in segment:
                if ch == "{":
                    depth, opened = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if opened and depth == 0:
                break
            j += 1
        if opened:
            if j - i + 1 > LIMIT:
                found.append((j - i + 1, i + 1, m.group(5)))
            i = j + 1
        else:
            i += 1
    return found


def main():
    bad = []
    for root in ROOTS:
        for path in sorted(pathlib.Path(root).rglob("*.rs")):
            if "tests" in path.parts[1:] or "vendor" in path.parts:
                continue
            bad += [(path, *f) for f in long_functions(path)]
    for path, n, line, name in bad:
        print(f"{path}:{line}: fn {name} is {n} lines (at most {LIMIT}, tests aside)")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
