"""Put benchmark results into the docs: rewrite every marked table from its JSON file.

    python benchmarks/render_results.py            # rewrite benchmarks/RESULTS.md and docs/*.md in place
    python benchmarks/render_results.py --check    # exit 1 if any marked table differs from its JSON

A benchmark run with `--json benchmarks/results/NAME.json` (benchmarks/common.py: `Report`) writes its
tables with the command line, the machine and the date. A Markdown file shows one of them with a
marked block, whose contents this script owns:

    <!-- table:benchmarks/results/NAME.json#KEY -->
    (generated: the command, the machine and date, the table, its notes)
    <!-- /table -->

So every number in a marked block is the output of the command printed above it. Tables from
before this rule are not marked; each is preceded by its command and labelled with the commit,
machine and date it came from.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.common import table  # noqa: E402

DOCS = ("benchmarks/RESULTS.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- table:(?P<file>[^#\s]+)#(?P<key>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def render_block(results: dict, key: str) -> str:
    """The Markdown of table `key` of one results file: command, machine and date, table, notes."""
    if key not in results["tables"]:
        raise KeyError(f"no table {key!r} (has {sorted(results['tables'])})")
    entry = results["tables"][key]
    cpu = next((line for line in results["machine"] if line.startswith("cpu:")), results["machine"][0])
    lines = [f"`{results['command']}`", "", f"{cpu}; {results['date']}.", "",
             table(entry["header"], entry["rows"], entry.get("align"))]
    if entry.get("notes"):
        lines += ["", *entry["notes"]]
    return "\n".join(lines) + "\n\n"  # a blank line ends the table before the closing marker


def render_text(text: str, root: str = ROOT) -> str:
    """`text` with every marked block rewritten from its JSON file (paths relative to `root`)."""
    cache = {}

    def replace(match: re.Match) -> str:
        path = os.path.join(root, match["file"])
        if path not in cache:
            if not os.path.exists(path):
                raise FileNotFoundError(f"{match['file']}: no such results file; run the benchmark with "
                                        f"--json {match['file']}")
            with open(path) as f:
                cache[path] = json.load(f)
        return match.group(1) + render_block(cache[path], match["key"]) + match.group(5)

    return BLOCK.sub(replace, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", help="Markdown files (default: benchmarks/RESULTS.md, docs/*.md)")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a marked table is stale")
    args = p.parse_args(argv)
    files = args.files or sorted(f for pattern in DOCS for f in glob.glob(os.path.join(ROOT, pattern)))
    stale = []
    for name in files:
        with open(name) as f:
            text = f.read()
        rendered = render_text(text)
        if rendered != text:
            stale.append(name)
            if not args.check:
                with open(name, "w") as f:
                    f.write(rendered)
    verb = "stale (run python benchmarks/render_results.py)" if args.check else "rewritten"
    for name in stale:
        print(f"{os.path.relpath(name, ROOT)}: {verb}")
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
