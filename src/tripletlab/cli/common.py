"""What the subcommands share: the exit statuses, the argument types of their flags and
the metrics as aligned text."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from tripletlab.data import DATASET_FORMS
from tripletlab.report import format_value, metric_notes, metric_tables

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: The --dataset forms every subcommand reads, as its help lists them.
DATASET_HELP = ", ".join(DATASET_FORMS)


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class ids, got {text!r}"
        ) from None


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


class _BoolFlag(argparse.Action):
    """A boolean flag: ``--name`` or ``--name true`` turns it on, ``--no-name`` or ``--name
    false`` off (``argparse.BooleanOptionalAction``, with the value form of earlier versions
    kept: yes/no, on/off and 1/0 work too)."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        default: object = None,
        help: str | None = None,
    ) -> None:
        negative = [f"--no-{s[2:]}" for s in option_strings if s.startswith("--")]
        super().__init__(
            [*option_strings, *negative],
            dest,
            nargs="?",
            default=default,
            type=_bool,
            metavar="true|false",
            help=help,
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if option_string is not None and option_string.startswith("--no-"):
            if values is not None:
                raise argparse.ArgumentError(self, f"{option_string} takes no value")
            setattr(namespace, self.dest, False)
        else:
            setattr(namespace, self.dest, True if values is None else values)


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a :class:`_BoolFlag` as ``--name [true|false], --no-name``."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _BoolFlag):
            on, off = action.option_strings
            return f"{on} [{action.metavar}], {off}"
        return super()._format_action_invocation(action)


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as aligned text: ``name  value`` lines; grouped metrics (``{"seen": {...},
    "unseen": {...}}``) as a table with a column per group, before the other values; then
    the notes of :func:`tripletlab.report.metric_notes`, one ``note:`` line each."""
    blocks = []
    for table in metric_tables(metrics):
        rows = [(name, [format_value(v) for v in values]) for name, values in table.rows]
        if table.columns != ("value",):
            rows.insert(0, ("metric", list(table.columns)))
        widths = [max(len(r[0]) for r in rows)]
        widths += [max(len(r[1][i]) for r in rows) for i in range(len(table.columns))]
        lines = [
            "  ".join(f"{c:<{w}}" for c, w in zip([name, *cells], widths, strict=True)).rstrip()
            for name, cells in rows
        ]
        blocks.append("\n".join(lines))
    notes = metric_notes(metrics)
    if notes:
        blocks.append("\n".join(f"note: {n}" for n in notes))
    return "\n\n".join(blocks)
