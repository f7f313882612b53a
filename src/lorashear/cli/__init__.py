"""The `lorashear` command: thin parsers that build a config and call the Python API.

Each subcommand lives in its own module with `register(subparsers)`; the handler it sets
returns an exit code. Errors a user can act on (LorashearError) are caught here, once; any other
exception is a bug: one line, and its full traceback in a file.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import traceback

from lorashear.errors import LorashearError

# One module per subcommand, in the order of the pipeline.
COMMAND_MODULES = [
    "lorashear.cli.assets_cmd",
    "lorashear.cli.analyze_cmd",
    "lorashear.cli.knowledge_cmd",
    "lorashear.cli.prune_cmd",
    "lorashear.cli.recover_cmd",
    "lorashear.cli.eval_cmd",
    "lorashear.cli.run_cmd",
    "lorashear.cli.export_gguf_cmd",
    "lorashear.cli.demo_cmd",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorashear",
        description="Structured pruning of LLMs through their LoRA adapters, with knowledge recovery.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # `run RECIPE -o OUT --resume key=value`: overrides after the options (argparse takes them first only)
        if not hasattr(args, "overrides") or any(arg.startswith("-") or "=" not in arg for arg in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    try:
        return int(args.handler(args) or 0)
    except LorashearError as err:
        print(f"lorashear {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lorashear {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug: never a bare traceback on the user's terminal
        trace = write_trace(args.command, sys.argv[1:] if argv is None else argv)
        print(
            f"lorashear {args.command}: internal error: {type(err).__name__}: {one_line(err)} "
            f"(full trace: {trace}; please report it)",
            file=sys.stderr,
        )
        return 1


def write_trace(command: str, argv: list[str]) -> str:
    """Write the command line and the exception being handled to a new file in the temp folder; return its path."""
    with tempfile.NamedTemporaryFile(
        "w", prefix=f"lorashear-{command}-", suffix=".trace.txt", delete=False
    ) as f:
        f.write(f"lorashear {' '.join(argv)}\n\n{traceback.format_exc()}")
    return f.name


def one_line(err: BaseException) -> str:
    """The exception's message on one line (validation errors span several)."""
    return " ".join(str(err).split())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
