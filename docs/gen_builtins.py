#!/usr/bin/env python3
"""Writes docs/BUILTINS.md from the interpreter's builtin tables (the entries
the REPL's :help reads), so the reference cannot drift from the code:
    python3 docs/gen_builtins.py > docs/BUILTINS.md
    python3 docs/gen_builtins.py --check    # exit 1 if docs/BUILTINS.md is stale"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ENTRY = re.compile(r'^\s*\{"(\w+)",\s*\w+,\s*-?\d+,\s*-?\d+,\s*"((?:[^"\\]|\\.)*)",\s*"((?:[^"\\]|\\.)*)"', re.M)
SECTIONS = [
    ("Language builtins", "stdlib/builtins.c",
     "Arithmetic, reductions, construction, linear algebra, randomness, data and strings. "
     "Elementwise functions broadcast. See [LANGUAGE.md](LANGUAGE.md) for which are differentiable."),
    ("Bilevel builtins", "runtime/bilevel_builtins.c",
     "Optimizer and hypergradient-method specs and the tools around `solve`; see [BILEVEL.md](BILEVEL.md)."),
    ("Figures", "stdlib/plot.c", "See [PLOT.md](PLOT.md) for every option of `plot`."),
    ("Collectives (MPI)", "stdlib/mpi.c",
     "For scripts run on several processes with `mpirun`; without MPI each behaves as on one rank. "
     "See [MPI.md](MPI.md)."),
]


def cell(text):
    return text.replace('\\"', '"').replace("|", "\\|")


def main():
    out = ["# Builtin functions", "",
           "Generated from the interpreter's own tables (the ones the REPL's `:help NAME` reads) by",
           "`python3 docs/gen_builtins.py > docs/BUILTINS.md`; do not edit by hand.",
           "`name = default` marks a named argument.", ""]
    for title, path, intro in SECTIONS:
        with open(os.path.join(ROOT, path)) as f:
            rows = sorted(ENTRY.findall(f.read()))
        out += ["## " + title, "", intro, "", "| function | what it does |", "| --- | --- |"]
        out += ["| `%s` | %s |" % (cell(sig), cell(doc)) for _, sig, doc in rows]
        out.append("")
    text = "\n".join(out).rstrip("\n") + "\n"
    if sys.argv[1:] == ["--check"]:
        with open(os.path.join(ROOT, "docs", "BUILTINS.md")) as f:
            if f.read() != text:
                sys.exit("docs/BUILTINS.md is stale: run python3 docs/gen_builtins.py > docs/BUILTINS.md")
        return
    sys.stdout.write(text)


main()
