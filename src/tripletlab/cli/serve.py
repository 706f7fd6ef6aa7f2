"""``tripletlab serve``: a run's network and an index behind a JSON API and a page
(:mod:`tripletlab.serve`)."""

from __future__ import annotations

import argparse
import os
import sys

from tripletlab.cli.progress import _with_bars
from tripletlab.serve import (
    MAX_K,
    ServeConfig,
    is_loopback,
    load_gallery,
    require_web,
    serve,
)
from tripletlab.serve.gallery import DEFAULT_MAX_UPLOAD_MB

#: Where the token is read from when --token is not given.
TOKEN_VARIABLE = "TRIPLETLAB_TOKEN"


def _add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = ServeConfig(run="")
    p = sub.add_parser(
        "serve",
        help="search a run's gallery from a browser or a script (needs the [serve] extra)",
        description="Serve a page and a JSON API that search an index with images embedded "
        "by the run: upload an image or pick an indexed item, see its nearest items and the "
        "verdict (match: LABEL or unknown, from the index's calibrated threshold), a 2-D map "
        "of the gallery and the run's metrics. Needs pip install 'tripletlab[serve]'.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the run folder whose network embeds uploads")
    p.add_argument(
        "--index",
        metavar="INDEX.npz",
        help="an index file (tripletlab index build); default: one built at start from the "
        "run's gallery (the training split of its dataset), cached as RUN_DIR/serve/index.npz "
        "and built again when the checkpoint or the dataset changes",
    )
    p.add_argument("--host", default=d.host, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=d.port, help=f"port (default {d.port})")
    p.add_argument(
        "--k", type=int, default=d.k, help=f"neighbours per query (default {d.k}, at most {MAX_K})"
    )
    p.add_argument(
        "--token",
        help=f"require Authorization: Bearer TOKEN on every request (default: ${TOKEN_VARIABLE}"
        "); the page takes it once as /?token=TOKEN",
    )
    p.add_argument(
        "--threshold",
        metavar="NAME|DISTANCE",
        help="match threshold: max_f1 or precision_P (any P, read off the index's "
        "calibration), or a distance "
        "(default: max_f1 when the index is calibrated, else no verdict)",
    )
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"larger uploads are refused with 413 (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def cmd_serve(ns: argparse.Namespace) -> int:
    token = ns.token if ns.token is not None else os.environ.get(TOKEN_VARIABLE) or None
    config = ServeConfig(
        run=ns.run,
        index=ns.index,
        host=ns.host,
        port=ns.port,
        k=ns.k,
        token=token,
        threshold=ns.threshold,
        device=ns.device,
        max_upload_mb=ns.max_upload_mb,
    )
    config.check()
    require_web()  # before the run loads: one line saying how to install the extra
    if not is_loopback(config.host):
        guard = "a bearer token is required" if token else "no token is required (--token)"
        print(
            f"tripletlab: warning: listening on {config.host}, not 127.0.0.1: anyone who can "
            f"reach this port can search the gallery; {guard}",
            file=sys.stderr,
        )
    gallery = _with_bars(ns, lambda bars: load_gallery(config, bars))
    verdict = gallery.threshold.describe() if gallery.threshold else "none (not calibrated)"
    print(
        f"serving {len(gallery):,} items of {gallery.index.dim} dimensions, threshold "
        f"{verdict}, at http://{config.host}:{config.port}/ (Ctrl-C stops)",
        flush=True,
    )
    for warning in gallery.warnings:
        print(f"tripletlab: warning: {warning}", file=sys.stderr)
    for note in gallery.notes:
        print(f"tripletlab: note: {note}", file=sys.stderr)
    serve(gallery, config)
    return 0
