#!/usr/bin/env python3
"""Which file calls which: the call graph between the .c files of each part
(module, aggregator, CLI, common), and its cycles.

    scripts/deps-graph.py            # every part; exit 1 if a part has a cycle
    scripts/deps-graph.py --dot      # the same as Graphviz

A file "calls" another when it names a function the other defines (not
static).  Reading is textual: comments and strings are removed first.  The
nginx module's own ngx_module_t (ngx_http_cfcost_module) is data every
file of the module names, not a call, and is not counted.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = [
    ("module", "ngx_http_cfcost_module"),
    ("aggregator", "aggregator"),
    ("cli", "cli"),
    ("common", "common"),
]

COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
STRING = re.compile(r'"(?:\\.|[^"\\\n])*"|\'(?:\\.|[^\'\\\n])*\'')
DEFINITION = re.compile(r"^([A-Za-z_]\w*)\(", re.M)
WORD = re.compile(r"[A-Za-z_]\w*")


def clean(text):
    return STRING.sub('""', COMMENT.sub(" ", text))


def definitions(text):
    """Non-static functions defined at the top level of a file."""
    names = set()
    lines = text.split("\n")
    for m in DEFINITION.finditer(text):
        line = text.count("\n", 0, m.start())
        kind = lines[line - 1] if line else ""
        if "static" not in kind.split() and m.group(1) not in ("if", "for"):
            names.add(m.group(1))
    return names


def graph(directory):
    files = sorted(f for f in os.listdir(directory) if f.endswith(".c"))
    text = {f: clean(open(os.path.join(directory, f), encoding="utf-8",
                          errors="replace").read()) for f in files}
    owner = {}
    for f in files:
        for name in definitions(text[f]):
            owner[name] = f
    edges = {f: {} for f in files}
    for f in files:
        for word in set(WORD.findall(text[f])):
            g = owner.get(word)
            if g and g != f:
                edges[f].setdefault(g, set()).add(word)
    return files, edges


def cycles(files, edges):
    """Strongly connected components of more than one file (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in files:
        if v not in index:
            visit(v)
    return out


def main(argv):
    dot = "--dot" in argv
    bad = 0
    if dot:
        print("digraph cfcost {\n  rankdir=LR;")
    for part, sub in PARTS:
        directory = os.path.join(ROOT, sub)
        if not os.path.isdir(directory):
            continue
        files, edges = graph(directory)
        found = cycles(files, edges)
        bad += len(found)
        if dot:
            print(f'  subgraph "cluster_{part}" {{ label="{part}";')
            for f in files:
                for g in sorted(edges[f]):
                    print(f'    "{f}" -> "{g}";')
            print("  }")
            continue
        print(f"{part} ({sub}/): {len(files)} files")
        for f in files:
            calls = ", ".join(f"{g} ({len(edges[f][g])})" for g in sorted(edges[f]))
            print(f"  {f} -> {calls or '-'}")
        for comp in found:
            print(f"  CYCLE: {' <-> '.join(comp)}")
        if not found:
            print("  no cycle")
    if dot:
        print("}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
