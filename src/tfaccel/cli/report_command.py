"""``tfaccel report DIR``: print the placement report saved with a traced SavedModel.

Why its own module: the report is a JSON file next to the model, so this command imports neither
TensorFlow nor the model (:mod:`tfaccel.cli.commands`, which the other commands share, imports both) and
answers at once.
"""

from __future__ import annotations

import argparse
import json

import tfaccel

__all__ = ["report"]


def report(args: argparse.Namespace) -> int:
    placement = tfaccel.load_report(args.dir)  # the public API; a JSON read
    if args.html:
        with open(args.html, "w", encoding="utf-8") as handle:
            handle.write(placement.to_html(title=f"tfaccel placement: {args.dir}"))
        print(f"wrote {args.html}")
        return 0
    if args.json:
        print(json.dumps(placement.to_json(), indent=1, sort_keys=True))
    else:
        placement.render(print)
    return 0
