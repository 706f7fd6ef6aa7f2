"""``tripletlab train``: its flags, the :class:`~tripletlab.training.TrainConfig` they
build (over a TOML or JSON ``--config`` file), the run folder, the reporter that draws the
progress bars and writes ``log.jsonl`` (and TensorBoard scalars), and the command itself,
which ends with the run's pictures and ``report.html``.

Under ``torchrun --nproc-per-node N -m tripletlab train ...`` (:mod:`tripletlab.distributed`)
rank 0 alone writes the run folder, the log and the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tripletlab import distributed
from tripletlab.cli.common import _bool, _int_list, format_metrics
from tripletlab.cli.progress import _with_bars
from tripletlab.data import DataError
from tripletlab.distances import DISTANCES
from tripletlab.evaluation import PlotConfig, run_plot
from tripletlab.losses import PAIR_MININGS, TRIPLET_MININGS
from tripletlab.models import MODELS
from tripletlab.training import (
    CONFIG_FIELDS,
    OBJECTIVES,
    OPTIMIZERS,
    SCHEDULES,
    EpochStats,
    StepInfo,
    TrainConfig,
    TrainingError,
    atomic_write_text,
    config_from_dict,
    fit,
    flatten_config,
)


def _add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train an embedding, evaluate it, write pictures and report.html",
        description="Train an embedding network, evaluate it on the test split (metrics.json) "
        "and write its pictures (PCA only; `tripletlab plot` adds t-SNE) and report.html into "
        "the run folder. Flags override --config; defaults are shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    a = p.add_argument
    g = p.add_argument_group("data")
    g.add_argument(
        "--dataset",
        help=f"fashion-mnist, mnist, digits or imagefolder:PATH (default {d.data.dataset})",
    )
    g.add_argument(
        "--data-dir",
        help="folder holding the IDX files (else $TRIPLETLAB_DATA, "
        "system locations, ~/.cache/tripletlab, then a download)",
    )
    g.add_argument(
        "--image-size",
        type=int,
        help=f"image folders: resize to this (default {d.data.image_size})",
    )
    g.add_argument(
        "--strict", action="store_true", help="image folders: unreadable files are errors"
    )
    g.add_argument(
        "--train-classes", type=_int_list, help="train on these class ids only (e.g. 0,1,2,3,4)"
    )
    g.add_argument("--test-classes", type=_int_list, help="test on these class ids only")
    g.add_argument("--unseen-classes", type=int, help="hold the last N classes out of training")
    g.add_argument(
        "--val-size",
        type=int,
        help=f"training images held out to pick the best epoch (default {d.data.val_size})",
    )
    g.add_argument(
        "--augment", type=_bool, help=f"random crops (and flips) (default {d.data.augment})"
    )
    g.add_argument(
        "--crop-padding",
        type=int,
        help="padding of the random crop (default 2 for image folders, else 0: none)",
    )
    g.add_argument(
        "--hflip",
        type=_bool,
        help="random horizontal flips (default: Fashion-MNIST and image folders)",
    )
    g.add_argument(
        "--tta",
        type=_bool,
        help="evaluate with the embeddings of each image and its mirror image averaged "
        "(default: when training with --hflip)",
    )
    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"{', '.join(MODELS)} (default {d.model.name})")
    g.add_argument(
        "--width",
        type=int,
        help="base width of the backbone (default: the model's own; 32 for small)",
    )
    g.add_argument("--embedding-dim", type=int, help=f"(default {d.model.embedding_dim})")
    g.add_argument(
        "--normalize-embeddings",
        type=_bool,
        help=f"L2-normalise the output (default {d.model.normalize_embeddings})",
    )
    g = p.add_argument_group("objective")
    g.add_argument("--objective", help=f"{', '.join(OBJECTIVES)} (default {d.objective.name})")
    g.add_argument(
        "--mining",
        help=f"triplet: {', '.join(TRIPLET_MININGS)} (default semi_hard); "
        f"contrastive: {', '.join(PAIR_MININGS)} (default hard_negative)",
    )
    g.add_argument("--margin", type=float, help="0.2 for triplet losses, 1.0 for contrastive ones")
    g.add_argument("--distance", help=f"{', '.join(DISTANCES)} (default {d.objective.distance})")
    g.add_argument(
        "-p",
        "--labels-per-batch",
        type=int,
        help="P: classes per batch (default: 10, or all classes when fewer)",
    )
    g.add_argument(
        "-k",
        "--samples-per-label",
        type=int,
        help=f"K: images per class in a batch (default {d.objective.samples_per_label})",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help=f"(default {d.optim.epochs})")
    g.add_argument(
        "--steps-per-epoch",
        type=int,
        help="batches per epoch (default: one pass over the training set)",
    )
    g.add_argument("--optimizer", help=f"{', '.join(OPTIMIZERS)} (default {d.optim.optimizer})")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {d.optim.lr})")
    g.add_argument("--weight-decay", type=float, help=f"(default {d.optim.weight_decay})")
    g.add_argument("--schedule", help=f"{', '.join(SCHEDULES)} (default {d.optim.schedule})")
    g.add_argument(
        "--warmup-epochs", type=float, help=f"linear warm-up (default {d.optim.warmup_epochs})"
    )
    g = p.add_argument_group("run")
    a("--out", help="run folder (default: a new runs/<date>-<time>-<dataset>-<objective>)")
    a("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR where it stopped")
    a(
        "--config",
        metavar="FILE",
        help="TOML or JSON file of settings: keys as the flags, with _ (lr = 0.01), or "
        "grouped in tables as in a run's config.json ([optim] lr = 0.01)",
    )
    a("--seed", type=int, help=f"(default {d.run.seed})")
    a("--device", help="auto, cpu or cuda (default auto: CUDA when available)")
    a(
        "--amp",
        help="bfloat16 mixed-precision training: auto (on CUDA and on CPUs with native "
        "bfloat16, e.g. AVX512-BF16), on or off (default auto)",
    )
    a("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    a("--eval-batch-size", type=int, help=f"(default {d.run.eval_batch_size})")
    a(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard scalars (needs tensorboard)",
    )
    a(
        "--no-report",
        action="store_true",
        help="skip the pictures and report.html at the end (tripletlab plot writes them later)",
    )
    a("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group(
        "distributed (torchrun --nproc-per-node N -m tripletlab train ...; docs/distributed.md)"
    )
    g.add_argument(
        "--distributed-loss",
        help="global: every process mines and computes the loss over the whole gathered "
        "batch, gradients equal a single process's; local: only its own anchors against the "
        "gathered batch, cheaper, the gradients differ (default global)",
    )
    g.add_argument(
        "--sync-bn",
        action="store_true",
        help="BatchNorm statistics over the global batch (CUDA only; default: per process)",
    )
    g.add_argument(
        "--dist-timeout",
        type=float,
        help="seconds a process waits for the others before it fails, when one died or hangs; "
        "must exceed the validation pass at the end of each epoch "
        f"(default {distributed.DEFAULT_TIMEOUT_S:g})",
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


def build_config(ns: argparse.Namespace) -> TrainConfig:
    """Defaults, then the config file, then the flags given on the command line."""
    settings = _read_config_file(ns.config) if getattr(ns, "config", None) else {}
    keys = {f.key for f in CONFIG_FIELDS}
    settings.update({k: v for k, v in vars(ns).items() if k in keys})
    return config_from_dict(settings)


class CliReporter:
    """Progress bars on stderr, a JSONL log and optional TensorBoard scalars in the run folder."""

    def __init__(self, run_dir: Path, *, quiet: bool, tensorboard: bool) -> None:
        self.log = (run_dir / "log.jsonl").open("a")
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
        self.log.write(json.dumps(record) + "\n")
        self.log.flush()

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
        record["samples_per_second"] = stats.samples_per_second
        self._write(record)
        if self.writer is not None:
            for key, value in val.items():
                self.writer.add_scalar(f"val/{key}", value, epoch + 1)
            self.writer.add_scalar("epoch/loss", stats.loss, epoch + 1)
        if not self.quiet:
            extra = "".join(f", {k} {v:.4f}" for k, v in val.items())
            print(
                f"epoch {epoch + 1}: loss {stats.loss:.4f}, active {stats.fraction_active:.3f}, "
                f"{stats.samples_per_second:.0f} img/s{extra}",
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


def _default_run_dir(config: TrainConfig) -> Path:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = config.data.dataset.split(":")[0]
    return Path("runs") / f"{stamp}-{name}-{config.objective.name}"


def _prepare_run_dir(config: TrainConfig, resume: str | None, argv: Sequence[str]) -> Path:
    """The run folder, created (or checked, for a resume), with ``command.txt`` written."""
    if resume:
        run_dir = Path(resume)
        if not run_dir.is_dir():
            raise ValueError(f"--resume {resume}: no such run folder")
    else:
        run_dir = Path(config.run.out) if config.run.out else _default_run_dir(config)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(
                f"cannot create the run folder {run_dir} ({err.strerror}); choose another --out"
            ) from None
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise ValueError(
                f"{run_dir} already holds a run; use --resume {run_dir} or another --out"
            )
    try:
        atomic_write_text(run_dir / "command.txt", shlex.join(["tripletlab", *argv]) + "\n")
    except OSError as err:
        raise ValueError(
            f"cannot write to the run folder {run_dir} ({err.strerror}); choose another --out"
        ) from None
    return run_dir


def cmd_train(ns: argparse.Namespace, argv: Sequence[str]) -> int:
    """``tripletlab train``; under ``torchrun``, in the process group it sets up and leaves."""
    own_group = distributed.launched() and not distributed.ranks().distributed
    timeout = getattr(ns, "dist_timeout", distributed.DEFAULT_TIMEOUT_S)
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
    if resume:
        config = TrainConfig()  # unused: the run's saved config is used (only --epochs applies)
    else:
        config = build_config(ns)
        config.resolved()  # fail on bad flags before touching the disk
    # Rank 0 alone touches the run folder; an error there stops every rank.
    run_dir = distributed.from_rank0(lambda: _prepare_run_dir(config, resume, argv))
    reporter = (
        CliReporter(
            run_dir,
            quiet=getattr(ns, "quiet", False),
            tensorboard=getattr(ns, "tensorboard", False),
        )
        if where.writes
        else None
    )
    try:
        result = fit(
            config,
            run_dir,
            reporter=reporter,
            resume=bool(resume),
            epochs=getattr(ns, "epochs", None) if resume else None,
        )
    finally:
        if reporter is not None:
            reporter.close()
    if not where.writes:
        return 0  # rank 0 evaluates, prints and writes the report
    print(format_metrics(result.metrics))
    if not getattr(ns, "no_report", False):
        if not getattr(ns, "quiet", False):
            print("writing pictures (PCA) and report.html", file=sys.stderr)
        device = result.config.run.device if result.config is not None else "auto"
        plot = PlotConfig(run=str(run_dir), quick=True, device=device)
        try:
            print(f"report: {_with_bars(ns, lambda p: run_plot(plot, p)).report}")
        except (DataError, TrainingError, ValueError) as err:  # the run itself is complete
            print(
                f"tripletlab: warning: no pictures or report ({err}); the run is complete",
                file=sys.stderr,
            )
    print(f"run folder: {run_dir}")
    return 0
