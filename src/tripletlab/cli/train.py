"""``tripletlab train``: its flags (one per field of
:class:`~tripletlab.training.TrainConfig`, generated from
:data:`~tripletlab.training.CONFIG_FIELDS`, booleans as ``--name``/``--no-name``), the
config they build (over a TOML or JSON ``--config`` file) and check before anything is
written, the run folder (removed again when the start fails before the first checkpoint),
the reporter that draws the progress bars and writes ``log.jsonl`` (and TensorBoard scalars)
and times the steps after each epoch's warm-up, and the command itself, which rewrites
``metrics.json`` in the documented layout (seen and unseen groups, the throughput without
warm-up) and ends with the run's pictures and ``report.html``.

Under ``torchrun --nproc-per-node N -m tripletlab train ...`` (:mod:`tripletlab.distributed`)
rank 0 alone writes the run folder, the log and the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tripletlab import distributed
from tripletlab.cli.common import (
    EXIT_INTERRUPTED,
    _BoolFlag,
    _HelpFormatter,
    _int_list,
    format_metrics,
)
from tripletlab.cli.progress import _with_bars
from tripletlab.data import DataError
from tripletlab.evaluation import PlotConfig, run_plot
from tripletlab.io import atomic_write_text, write_errors
from tripletlab.training import (
    CONFIG_FIELDS,
    CONFIG_PARTS,
    ConfigError,
    ConfigField,
    EpochStats,
    FieldKind,
    Interrupted,
    StepInfo,
    TrainConfig,
    TrainingError,
    config_from_dict,
    fit,
    flatten_config,
)

_FLAG_TYPES: dict[FieldKind, Callable[[str], object]] = {
    "str": str,
    "choice": str,  # checked by config_from_dict, which lists the valid ones
    "int": int,
    "float": float,
    "int_list": _int_list,
}


def _flag_help(f: ConfigField) -> str:
    """The field's help with its choices and default (a None default is described by the
    help itself), ``%`` escaped for argparse."""
    notes = []
    if f.default is not None:
        if f.choices:
            notes.append(f"one of: {', '.join(f.choices)}")
        notes.append(f"default: {f.default_text}")
    text = f"{f.help} ({'; '.join(notes)})" if f.help and notes else f.help or "; ".join(notes)
    return text.replace("%", "%%")


def _add_config_flag(group: argparse._ArgumentGroup, f: ConfigField) -> None:
    names = [f"-{f.short}", f.flag] if f.short else [f.flag]
    if f.kind == "bool":
        group.add_argument(*names, dest=f.key, action=_BoolFlag, help=_flag_help(f))
    else:
        group.add_argument(
            *names, dest=f.key, type=_FLAG_TYPES[f.kind], metavar=f.metavar, help=_flag_help(f)
        )


def _add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help="train an embedding, evaluate it, write pictures and report.html",
        description="Train an embedding network, evaluate it on the test split (metrics.json) "
        "and write its pictures (PCA only; `tripletlab plot` adds t-SNE) and report.html into "
        "the run folder. Flags override --config; defaults are shown.",
        formatter_class=_HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    # One flag per config field (training.CONFIG_FIELDS), in a group per part of the config.
    groups = {part.name: p.add_argument_group(part.title) for part in CONFIG_PARTS}
    for f in CONFIG_FIELDS:
        _add_config_flag(groups[f.part], f)
    g = groups["run"]
    g.add_argument(
        "--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped"
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or JSON file of settings: keys as the flags, with _ (lr = 0.01), or "
        "grouped in tables as in a run's config.json ([optim] lr = 0.01)",
    )
    g.add_argument(
        "--no-report",
        action="store_true",
        help="skip the pictures and report.html at the end (tripletlab plot writes them later)",
    )
    g.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or progress messages: the metrics and their notes, where the "
        "report and run are, warnings and errors only",
    )
    groups["distributed"].add_argument(
        "--dist-timeout",
        type=float,
        help="seconds a process waits for the others before it fails, when one died or hangs; "
        "must exceed the validation pass at the end of each epoch "
        f"(default: {distributed.DEFAULT_TIMEOUT_S:g})",
    )


def _read_config_file(path: str) -> dict[str, object]:
    """The flat settings of a TOML or JSON config file, checked; errors name the file."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"config file {path} does not exist")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start})"
        ) from None
    except OSError as err:
        raise ValueError(f"cannot read the config file {path} ({err.strerror})") from None
    if file.suffix == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"config file {path} is not valid JSON ({err})") from None
    else:
        if sys.version_info < (3, 11):
            raise ValueError("TOML config files need Python >= 3.11; use a .json file")
        import tomllib

        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"config file {path} is not valid TOML ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a table of settings")
    try:
        config_from_dict(raw)  # every value checked, before the flags replace some
        return flatten_config(raw)
    except ValueError as err:
        raise ValueError(f"config file {path}: {err}") from None


def given_settings(ns: argparse.Namespace) -> dict[str, object]:
    """The settings the user gave (flat keys): the config file's, then the flags'."""
    settings = _read_config_file(ns.config) if getattr(ns, "config", None) else {}
    keys = {f.key for f in CONFIG_FIELDS}
    settings.update({k: v for k, v in vars(ns).items() if k in keys})
    return settings


def build_config(ns: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then the flags given on the command line."""
    return config_from_dict(given_settings(ns))


def resolve_config(ns: argparse.Namespace) -> TrainConfig:
    """:func:`build_config`, resolved and checked (:meth:`TrainConfig.resolved`): every
    setting that cannot train fails here, before anything is written or loaded. A value out
    of range that came from the ``--config`` file is named as the file has it."""
    config = build_config(ns)
    try:
        return config.resolved()
    except ConfigError as err:
        path = getattr(ns, "config", None)
        if path and err.key not in vars(ns) and err.key in _read_config_file(path):
            raise ValueError(f"config file {path}: {err.key} {err.problem}") from None
        raise


class CliReporter:
    """Progress bars on stderr, a JSONL log and optional TensorBoard scalars in the run folder."""

    def __init__(self, run_dir: Path, *, quiet: bool, tensorboard: bool) -> None:
        self.log_path = run_dir / "log.jsonl"
        self.log = self.log_path.open("a")
        self.quiet = quiet
        self.bar: Any = None
        self.writer: Any = None
        self.global_step = 0
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError(
                    "--tensorboard needs the tensorboard package: "
                    "pip install 'tripletlab[tensorboard]'"
                ) from None
            self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def _write(self, record: dict[str, Any]) -> None:
        with write_errors(self.log_path):  # a full disk: one line naming log.jsonl
            self.log.write(json.dumps(record) + "\n")
            self.log.flush()

    def resumed(self, epoch: int, step: int) -> None:
        """Drop the records past the checkpoint a resume starts from (they are done again)
        and a torn last line, so that ``log.jsonl`` tells each step once."""
        self.log.close()
        atomic_write_text(self.log_path, "".join(_log_before(self.log_path, epoch, step)))
        self.log = self.log_path.open("a")

    def epoch_start(self, epoch: int, steps: int) -> None:
        if not self.quiet:
            from tqdm import tqdm

            # disable=None: no bar when stderr is not a terminal (logs, CI)
            self.bar = tqdm(
                total=steps, desc=f"epoch {epoch + 1}", unit="step", leave=True, disable=None
            )

    def step(self, epoch: int, info: StepInfo) -> None:
        self.global_step += 1
        self._write({"kind": "step", "epoch": epoch + 1, **vars(info)})
        if self.writer is not None:
            self.writer.add_scalar("train/loss", info.loss, self.global_step)
            self.writer.add_scalar("train/fraction_active", info.fraction_active, self.global_step)
            self.writer.add_scalar("train/lr", info.lr, self.global_step)
        if self.bar is not None:
            rate = self.bar.format_dict.get("rate") or 0.0
            self.bar.set_postfix(
                loss=f"{info.loss:.4f}",
                active=f"{info.fraction_active:.3f}",
                img_s=f"{rate * info.samples:.0f}",
                refresh=False,
            )
            self.bar.update(1)

    def epoch_end(self, epoch: int, stats: EpochStats, val: dict[str, float]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        record = {"kind": "epoch", "epoch": epoch + 1, **vars(stats), **val}
        record["samples_per_second"] = stats.samples_per_second  # without the warm-up steps
        self._write(record)
        if self.writer is not None:
            for key, value in val.items():
                self.writer.add_scalar(f"val/{key}", value, epoch + 1)
            self.writer.add_scalar("epoch/loss", stats.loss, epoch + 1)
        if not self.quiet:
            extra = "".join(f", {k} {v:.4f}" for k, v in val.items())
            print(
                f"epoch {epoch + 1}: loss {stats.loss:.4f}, active {stats.fraction_active:.3f}, "
                f"{record['samples_per_second']:.0f} img/s{extra}",
                file=sys.stderr,
            )

    def message(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.log.close()
        if self.writer is not None:
            self.writer.close()


def _log_before(path: Path, epoch: int, step: int) -> list[str]:
    """The lines of ``log.jsonl`` written before a checkpoint taken after ``step`` steps of
    the 0-based ``epoch`` (records count epochs from 1); unreadable lines are dropped."""
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
            number = int(record["epoch"])
            early = number <= epoch or (
                record["kind"] == "step" and number == epoch + 1 and int(record["step"]) < step
            )
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a killed process
        if early:
            kept.append(line + "\n")
    return kept


def _default_run_dir(config: TrainConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.data.dataset.split(":")[0]
    return Path("runs") / f"{stamp}-{name}-{config.objective.name}"


@dataclass(frozen=True)
class RunFolder:
    """The run folder and what this command found there, so that a start that fails
    before the first checkpoint leaves nothing behind (:meth:`discard`).

    Attributes:
        path: the run folder.
        created: the folders this command created, the run folder first, then the parents
            it had to create (``runs/``); empty when the folder existed.
        before: the names in the folder before the command (empty when it created it).
        command: ``command.txt``'s text before the command (empty for a new run).
    """

    path: Path
    created: tuple[Path, ...]
    before: frozenset[str]
    command: str = ""

    @property
    def started(self) -> bool:
        """Whether the run wrote its first checkpoint (then everything in it is kept)."""
        return (self.path / "checkpoints" / "last.pt").exists()

    def discard(self) -> None:
        """Remove what this command added, unless the run has a checkpoint: the folders it
        created (a parent only when nothing else is in it), or in a folder that existed
        (``--out`` an existing folder, ``--resume``) the entries that were not there."""
        if self.started:
            return
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.created[1:]:
                try:
                    parent.rmdir()  # only when empty
                except OSError:
                    break
            return
        for entry in self.path.iterdir() if self.path.is_dir() else ():
            if entry.name not in self.before:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _entries(folder: Path) -> frozenset[str]:
    return frozenset(e.name for e in folder.iterdir()) if folder.is_dir() else frozenset()


def _prepare_run_dir(config: TrainConfig, resume: str | None, argv: Sequence[str]) -> RunFolder:
    """The run folder, created (or checked, for a resume), with ``command.txt`` written."""
    if resume:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise ValueError(f"--resume {resume}: no such run folder")
        command = run_dir / "command.txt"
        try:
            previous = command.read_text() if command.is_file() else ""
        except OSError as err:
            raise ValueError(
                f"--resume {resume}: cannot read {command} ({err.strerror}); make it readable "
                "or remove it"
            ) from None
        folder = RunFolder(run_dir, (), _entries(run_dir), previous)
    else:
        run_dir = Path(config.run.out) if config.run.out else _default_run_dir(config)
        missing, p = [], run_dir
        while not p.exists() and not p.is_symlink() and p != p.parent:
            missing.append(p)
            p = p.parent
        folder = RunFolder(run_dir, tuple(missing), _entries(run_dir))
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            folder.discard()
            raise ValueError(
                f"cannot create the run folder {run_dir} ({err.strerror}); choose another --out"
            ) from None
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise ValueError(
                f"{run_dir} already holds a run; use --resume {run_dir} or another --out"
            )
    command = run_dir / "command.txt"
    try:
        atomic_write_text(command, folder.command + shlex.join(["tripletlab", *argv]) + "\n")
    except OSError as err:
        folder.discard()
        raise ValueError(
            f"cannot write to the run folder {run_dir} ({err.strerror}); choose another --out"
        ) from None
    return folder


def cmd_train(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    """``tripletlab train``; under ``torchrun``, in the process group it sets up and leaves."""
    timeout = getattr(ns, "dist_timeout", distributed.DEFAULT_TIMEOUT_S)
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"--dist-timeout must be a positive number of seconds, got {timeout}")
    own_group = distributed.launched() and not distributed.ranks().distributed
    where = distributed.init(timeout) if own_group else distributed.ranks()
    try:
        return _train(ns, argv, where)
    except RuntimeError as err:  # fit names the epoch and checkpoint; this is the set-up
        if not (where.distributed and distributed.is_collective_failure(err)):
            raise
        raise distributed.PeersLost(
            f"rank {where.rank} lost the other processes ({str(err).splitlines()[0][:200]}): "
            "another rank failed (see its message) or did not answer within --dist-timeout"
        ) from err
    finally:
        if own_group:
            distributed.close()


def _train(ns: argparse.Namespace, argv: Sequence[str], where: distributed.Ranks) -> int:
    resume = getattr(ns, "resume", None)
    changes: dict[str, object] = {}
    if resume:
        config = TrainConfig()  # unused: the run's saved config, with the flags given
        changes = given_settings(ns)
        config_from_dict(changes)  # every value checked before anything is read
        tensorboard = bool(changes.get("tensorboard", False))
    else:
        config = resolve_config(ns)  # fail on bad settings before touching the disk
        tensorboard = config.run.tensorboard
    # Rank 0 alone touches the run folder; an error there stops every rank.
    folder = distributed.from_rank0(lambda: _prepare_run_dir(config, resume, argv))
    run_dir = folder.path
    try:
        reporter = (
            CliReporter(run_dir, quiet=getattr(ns, "quiet", False), tensorboard=tensorboard)
            if where.writes
            else None
        )
        try:
            result = fit(config, run_dir, reporter=reporter, resume=bool(resume), changes=changes)
        finally:
            if reporter is not None:
                reporter.close()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside the training steps
        last = run_dir / "checkpoints" / "last.pt"
        if last.is_file():
            raise Interrupted(last) from None  # the last finished epoch
        if where.writes:
            folder.discard()
        raise
    except BaseException:
        if where.writes:
            folder.discard()  # a start that failed before its first checkpoint leaves nothing
        raise
    if not where.writes:
        return 0  # rank 0 evaluates, prints and writes the report
    if result.finished is not None:  # the resume of a finished run changes nothing
        if folder.command:
            atomic_write_text(run_dir / "command.txt", folder.command)
        else:  # the run had none
            (run_dir / "command.txt").unlink(missing_ok=True)
        print(f"run folder: {run_dir}")
        return 0
    print(format_metrics(result.metrics))
    if not getattr(ns, "no_report", False):
        if not getattr(ns, "quiet", False):
            print("writing pictures (PCA) and report.html", file=sys.stderr)
        device = result.config.run.device if result.config is not None else "auto"
        plot = PlotConfig(run=str(run_dir), quick=True, device=device)
        try:
            print(f"report: {_with_bars(ns, lambda p: run_plot(plot, p)).report}")
        except KeyboardInterrupt:
            print(
                f"tripletlab: interrupted while drawing the report; the run is complete "
                f"(`tripletlab plot {run_dir}` draws it)",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        except (DataError, TrainingError, ValueError) as err:  # the run itself is complete
            print(
                f"tripletlab: warning: no pictures or report ({err}); the run is complete",
                file=sys.stderr,
            )
    print(f"run folder: {run_dir}")
    return 0
