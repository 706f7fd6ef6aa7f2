"""The ``tripletlab`` program: one parser over every subcommand, and :func:`main`, which
runs the command and turns its errors into one line on stderr and an exit status."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, cast

from tripletlab import distributed
from tripletlab.cli.common import EXIT_INTERRUPTED, EXIT_USAGE
from tripletlab.cli.embed import _add_embed_parser, _add_export_parser, cmd_embed, cmd_export
from tripletlab.cli.evaluate import _add_evaluate_parser, _add_plot_parser, cmd_evaluate, cmd_plot
from tripletlab.cli.search import SEARCH_COMMANDS, _add_search_parsers
from tripletlab.cli.serve import _add_serve_parser, cmd_serve
from tripletlab.cli.train import _add_train_parser, cmd_train
from tripletlab.data import DataError
from tripletlab.training import Diverged, Interrupted, TrainingError


class _Parser(argparse.ArgumentParser):
    """argparse's parser with usage errors in one line, ``PROG: error: MESSAGE (PROG -h for
    the options)``, exit 2 (argparse prints its whole usage block first). Sub-commands'
    parsers are of this class too (``add_subparsers`` makes parsers of its parser's type).

    A flag is taken only as written: argparse's default takes any unambiguous start of one
    (``--epoch`` for ``--epochs``), so a half-typed flag would change a run unsaid. A flag
    this parser does not know gets the one it may stand for; the arguments being parsed
    (:attr:`given`) let a missing required flag's error name a misspelt one too."""

    given: Sequence[str] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        unknown = _unknown_flags(self, self.given)
        missing = ("the following arguments are required", "one of the arguments")
        if message.startswith(missing) and unknown:
            message += f"; unrecognized: {' '.join(unknown)}{_did_you_mean(unknown)}"
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} ({self.prog} -h for the options)\n")


def _unknown_flags(parser: argparse.ArgumentParser, args: Sequence[str]) -> dict[str, str]:
    """The long flags among ``args`` (up to a ``--``, after which nothing is a flag) that
    ``parser`` does not know, each with the options it may stand for: those it starts, else
    the closest by spelling (``""`` for none).

    Example:
        >>> p = _Parser(prog="p")
        >>> for flag in ("--val-size", "--val-classes", "--epochs"):
        ...     _ = p.add_argument(flag)
        >>> _unknown_flags(p, ["--val", "1", "--epoch=2", "--epochs", "--", "--x"])
        {'--val': '--val-size or --val-classes', '--epoch': '--epochs'}
    """
    known = [o for o in parser._option_string_actions if o.startswith("--")]
    out = {}
    for arg in args:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in parser._option_string_actions:
            near = [o for o in known if o.startswith(flag)]
            near = near or difflib.get_close_matches(flag, known, n=1)
            out[flag] = " or ".join(near)
    return out


def _did_you_mean(unknown: dict[str, str]) -> str:
    """`` (did you mean --epochs?)`` for the flags of :func:`_unknown_flags` that have one."""
    meant = [m for m in unknown.values() if m]
    return f" (did you mean {', '.join(meant)}?)" if meant else ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tripletlab",
        description="Similarity learning with triplet loss: train an embedding, evaluate it "
        "(on any dataset, seen and unseen classes) and draw it.",
    )
    # Not required: without a command, main prints the help (the list of commands) and exits 2.
    sub = cast(  # its parsers are _Parser, used as ArgumentParser
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND"),
    )
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_plot_parser(sub)
    _add_embed_parser(sub)
    _add_export_parser(sub)
    _add_search_parsers(sub)
    _add_serve_parser(sub)
    return parser


def _prefix() -> str:
    """``tripletlab: `` and, in a distributed run, the rank (``tripletlab: rank 1: ``)."""
    return (
        f"tripletlab: rank {os.environ.get('RANK', '?')}: "
        if distributed.launched()
        else "tripletlab: "
    )


_PACKAGE = Path(__file__).resolve().parent.parent  # src/tripletlab


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """While a command runs, tripletlab's own warnings print as ``tripletlab: warning: ...``
    (one line, no source path), each text once per command (a data set read again for the
    final evaluation and the report warns again); other libraries' keep Python's format.
    Only the text of a printed warning changes: recorded ones (``pytest.warns``,
    ``catch_warnings``) do not."""
    python_format = warnings.formatwarning
    printed: set[str] = set()

    def one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        line: str | None = None,
    ) -> str:
        if Path(filename).resolve().is_relative_to(_PACKAGE):
            text = f"{_prefix()}warning: {message}\n"
            if text in printed:
                return ""  # said already: Python's once-per-place registry is reset by
            printed.add(text)  # every catch_warnings, so it does not hold within a run
            return text
        return python_format(message, category, filename, lineno, line)

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = python_format


def _command_parser(
    parser: argparse.ArgumentParser, ns: argparse.Namespace
) -> argparse.ArgumentParser:
    """The innermost parser of the command ``ns`` ran (``tripletlab index build``'s), else
    ``parser``."""
    for action in parser._actions:  # argparse keeps its sub-commands here only
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(ns, action.dest, None) or "")
            if isinstance(chosen, argparse.ArgumentParser):
                return _command_parser(chosen, ns)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    with _warnings_as_lines():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    _Parser.given = args  # for the errors of the parse, and only of this one
    try:
        ns, unknown = parser.parse_known_args(args)
    finally:
        _Parser.given = ()
    if unknown:  # named by the command's parser: its -h lists the options it takes
        command = _command_parser(parser, ns)
        hint = _did_you_mean(_unknown_flags(command, unknown))
        command.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    if ns.command is None:  # `tripletlab` alone: a usage error that lists the commands
        parser.print_help(sys.stderr)
        print(f"{_prefix()}error: choose a command (tripletlab COMMAND -h)", file=sys.stderr)
        return EXIT_USAGE
    try:
        if ns.command == "train":
            return cmd_train(ns, args)
        if ns.command == "evaluate":
            return cmd_evaluate(ns)
        if ns.command == "plot":
            return cmd_plot(ns)
        if ns.command == "embed":
            return cmd_embed(ns)
        if ns.command == "export":
            return cmd_export(ns)
        if ns.command in SEARCH_COMMANDS:
            return SEARCH_COMMANDS[ns.command](ns)
        if ns.command == "serve":
            return cmd_serve(ns)
    except Interrupted as err:
        run_dir = err.checkpoint.parent.parent
        print(
            f"{_prefix()}{err}; continue with: tripletlab train --resume {run_dir}", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print(f"{_prefix()}interrupted; nothing half-written was kept", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (Diverged, distributed.PeersLost) as err:
        print(f"{_prefix()}error: {err}", file=sys.stderr)
        return 1
    except (DataError, TrainingError, ValueError) as err:
        print(f"{_prefix()}error: {err}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_USAGE
