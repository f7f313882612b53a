"""docs/cli.md, generated from the real argparse parsers: one section per subcommand.

    python -m lorashear.cli.reference --write docs/cli.md      # regenerate (a test keeps the file in step)
    python -m lorashear.cli.reference                          # print it

Everything comes from the parsers: a command's description (else its one-line help), a synopsis,
its epilog, and per argument group one definition-list line per option with its help text and default.
Descriptions and epilogs of parsers built with `RawDescriptionHelpFormatter` are copied verbatim, so
write them to read well both in a terminal and as Markdown: paragraphs separated by blank lines,
commands and tables indented by four spaces after a blank line. Nothing depends on the terminal width.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lorashear.cli import build_parser
from lorashear.io import write_atomic

REGENERATE = "python -m lorashear.cli.reference --write docs/cli.md"
HEADER = (f"<!-- Generated from the parsers in src/lorashear/cli/ by `{REGENERATE}`.\n"
          "     Edit the parsers' help, description and epilog, not this file: a test fails when it is stale. -->")


def reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The Markdown reference of the `lorashear` command and every subcommand."""
    parser = parser or build_parser()
    sub = _subparsers(parser)
    summaries = {choice.dest: _expand(choice.help, choice, parser.prog) for choice in sub._choices_actions}
    lines = [HEADER, "", "# CLI reference", ""]
    lines += _text(parser, parser.description) + _text(parser, parser.epilog)
    lines += ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{parser.prog} {name}`](#{_anchor(parser.prog, name)}) | {summaries.get(name, '')} |"
              for name in sub.choices]
    lines.append("")
    for name, command in sub.choices.items():
        lines += _command(command, summaries.get(name, ""))
    return "\n".join(lines).rstrip("\n") + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def _anchor(*words: str) -> str:
    """GitHub's anchor of a heading `words` (lower case, spaces to hyphens)."""
    return "-".join(words).lower()


def _command(parser: argparse.ArgumentParser, summary: str) -> list[str]:
    """One subcommand: heading, description (else its one-line help), synopsis, epilog, arguments by group."""
    lines = [f"## {parser.prog}", ""]
    lines += _text(parser, parser.description) or [summary, ""]
    lines += ["```", _synopsis(parser), "```", ""]
    lines += _text(parser, parser.epilog)
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if not isinstance(a, argparse._HelpAction)]
        if not actions:
            continue
        title = {id(parser._positionals): "Arguments", id(parser._optionals): "Options"}.get(id(group), group.title)
        lines += [f"### {title[0].upper()}{title[1:]}", ""]
        if group.description:
            lines += [" ".join(group.description.split()), ""]
        lines += [_option(a, parser.prog) for a in actions] + [""]
    return lines


def _text(parser: argparse.ArgumentParser, text: str | None) -> list[str]:
    """A description or epilog as Markdown lines: verbatim for raw formatters, else one paragraph."""
    if not text:
        return []
    if "%(prog)" in text:
        text = text % {"prog": parser.prog}
    if issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter):
        return [line.rstrip() for line in text.strip("\n").splitlines()] + [""]
    return [" ".join(text.split()), ""]


def _synopsis(parser: argparse.ArgumentParser) -> str:
    """`prog POSITIONALS REQUIRED-OPTIONS [options]`: what a call must give."""
    parts = [parser.prog]
    optional = False
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            parts.append(_values(action, _positional_name(action)))
        elif action.required:
            parts.append(f"{action.option_strings[0]} {_values(action, _metavar(action))}".rstrip())
        else:
            optional = True
    return " ".join(parts + (["[options]"] if optional else []))


def _option(action: argparse.Action, prog: str) -> str:
    """`- `--flag VALUE`: help (default: X)` for an option; `- `NAME`: help` for a positional."""
    if action.option_strings:
        names = ", ".join(action.option_strings)
        shown = f"{names} {_values(action, _metavar(action))}".rstrip()
    else:
        shown = _values(action, _positional_name(action))
    text = _expand(action.help, action, prog)
    default = _default(action)
    if default is not None and "default" not in text:
        text = f"{text} (default: {default})".strip()
    if action.required and action.option_strings:
        text = f"required; {text}" if text else "required"
    return f"- `{shown}`" + (f": {text}" if text else "")


def _positional_name(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _metavar(action: argparse.Action) -> str:
    """What follows an option on the command line ('' for flags that take no value)."""
    if action.nargs == 0:
        return ""
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest.upper()


def _values(action: argparse.Action, name: str) -> str:
    """`name` repeated as `nargs` asks (`X`, `[X]`, `[X ...]`, `X [X ...]`)."""
    if not name:
        return ""
    return {None: name, "?": f"[{name}]", "*": f"[{name} ...]", "+": f"{name} [{name} ...]"}.get(
        action.nargs, name)


def _default(action: argparse.Action) -> str | None:
    """The default worth showing: none for flags, None, empty lists or suppressed values."""
    value = action.default
    if action.nargs == 0 or value is None or value is argparse.SUPPRESS or value == [] or value is False:
        return None
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def _expand(text: str | None, action: argparse.Action, prog: str) -> str:
    """argparse's %-expansion of a help text (`%(default)s`, `%%`), as `--help` prints it."""
    if not text or text is argparse.SUPPRESS:
        return ""
    params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
    params["prog"] = prog
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    return " ".join((text % params).split())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lorashear.cli.reference", description=__doc__.splitlines()[0])
    p.add_argument("--write", type=Path, metavar="PATH", help="write the reference to PATH instead of printing it")
    args = p.parse_args(argv)
    text = reference()
    if args.write is None:
        sys.stdout.write(text)
        return 0
    write_atomic(args.write, text)
    print(f"wrote {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
