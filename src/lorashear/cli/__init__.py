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


EPILOG = """\
Every command is a thin parser over a Python function (lorashear.prune.api.prune_model,
lorashear.recover.recover, lorashear.pipeline.run_recipe, ...): what the CLI does is callable from
Python. `lorashear COMMAND --help` lists a command's flags; docs/cli.md lists them all.

A MODEL argument is a built-in name (smollm2-135m, the default; gemma3-270m and qwen2.5-coder-0.5b,
downloaded on first use: docs/data.md), a local HF folder (pruned folders included), a peft LoRA
adapter folder (loaded onto the base model its adapter_config.json names, itself any MODEL argument),
a local .gguf file of any architecture transformers reads, or a hub id (org/name).

Exit codes: 0 done; 2 a usage error or an error you can act on, printed as one line
`lorashear COMMAND: error: ...`; 130 interrupted; 1 an internal error (a bug), printed as one line
with the path of a file that holds its full trace. Folders and files are written under a temporary
name and renamed at the end, so an interrupted command never leaves a finished-looking output.

Large models (dtype, gradient checkpointing, memory per stage): docs/scale.md. Recipes for
`lorashear run`: docs/recipes.md. How the stages fit together: docs/design.md.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lorashear",
        description="Structured pruning of LLMs through their LoRA adapters, with knowledge recovery.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
