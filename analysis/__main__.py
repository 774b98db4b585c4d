"""python -m analysis: gather runs and write the report folder (figures and tables).

    python -m analysis outputs/quickstart                      # offline W&B runs under a sweep
    python -m analysis outputs/quickstart --source results     # from results.json files
    python -m analysis --source online --project lic-sweep --group seminar
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codec.errors import LicSweepError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0])
    parser.add_argument("root", nargs="?", type=Path, help="folder to search (a sweep directory)")
    parser.add_argument("--source", choices=("offline", "results", "online"), default="offline")
    parser.add_argument("--out", type=Path, help="report folder (default: ROOT/report)")
    parser.add_argument("--reference", default="factorized",
                        help="BD-rate reference: a model of the sweep or an anchor name")
    parser.add_argument("--no-anchors", action="store_true")
    parser.add_argument("--no-complexity", action="store_true")
    parser.add_argument("--log-to-wandb", action="store_true", help="log figures and tables as an analysis run")
    parser.add_argument("--project", default="lic-sweep")
    parser.add_argument("--entity")
    parser.add_argument("--group")
    parser.add_argument("--tags", nargs="*")
    args = parser.parse_args(argv)
    if args.source != "online" and args.root is None:
        parser.error("give the folder to search (e.g. outputs/quickstart), or --source online")
    out = args.out or ((args.root or Path("reports")) / "report")
    from analysis.report import build_report

    try:
        online = {"project": args.project, "entity": args.entity, "group": args.group, "tags": args.tags} \
            if args.source == "online" else {}
        written = build_report(args.root, out, args.source, args.reference, not args.no_anchors,
                               not args.no_complexity, args.log_to_wandb, **online)
    except LicSweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\nreport in {out}: RD plot {written['rd_plot']}, results table {written['results_table']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
