"""``torchenv compare``: several check reports side by side (the model and renderers: torchenv.compare)."""

from __future__ import annotations

import argparse
import shutil

from torchenv import compare, safeio


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="put check reports side by side (variants, nodes, two builds of one spec)",
        description="Compare JSON reports written by `torchenv check --json`: versions, facts and check "
        "outcomes that differ, bench figures with ratios, and package-set differences. The first report "
        "is the baseline.",
    )
    p.add_argument("reports", metavar="REPORT.json", nargs="*", help="two or more reports; the first is the baseline")
    p.add_argument("--markdown", metavar="PATH", help="also write the comparison as Markdown here")
    p.add_argument("--html", metavar="PATH", help="also write it as one static HTML page here (opens from disk)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The outputs are checked first: `compare A B --html B` would overwrite a report it reads.
    safeio.check_outputs(
        {"--markdown": args.markdown, "--html": args.html},
        inputs={f"report {path}": path for path in args.reports},
        command="torchenv compare",
    )
    comparison = compare.build(compare.load_all(args.reports))
    width = max(80, min(shutil.get_terminal_size((120, 20)).columns, 200))
    print(compare.render_text(comparison, width), end="")
    if args.markdown:
        safeio.write_text(args.markdown, compare.render_markdown(comparison), what="torchenv compare --markdown")
        print(f"markdown: {args.markdown}")
    if args.html:
        safeio.write_text(args.html, compare.render_html(comparison), what="torchenv compare --html")
        print(f"html: {args.html}")
    return 0
