"""Search, over :mod:`tripletlab.search.commands`: ``tripletlab index build`` (an index file from
an embeddings file), ``tripletlab search``, ``tripletlab calibrate`` (match thresholds
written into the index file) and ``tripletlab match`` (each query's label, or "unknown")."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tripletlab.calibration import DEFAULT_PRECISIONS, MAX_F1, format_calibration
from tripletlab.distances import DISTANCES
from tripletlab.search import BACKENDS, FAISS_INDEXES, IndexConfig
from tripletlab.search.commands import (
    GRID_MAX_QUERIES,
    CalibrateConfig,
    IndexBuildConfig,
    MatchConfig,
    SearchConfig,
    format_match,
    format_search,
    run_calibrate,
    run_index_build,
    run_match,
    run_search,
)

_THRESHOLD_HELP = (
    f"{MAX_F1} or precision_P (any target precision P, read off the calibration that "
    "`tripletlab calibrate` stored), or a distance"
)


def _add_index_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    d = IndexConfig()
    p = sub.add_parser(
        "index",
        help="build a nearest-neighbour index from an embeddings file",
        description="Search indexes: `tripletlab index build` writes one index file (an .npz "
        "read without pickle: vectors or the faiss structure, labels, ids, thresholds).",
    )
    actions = p.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    b = actions.add_parser(
        "build",
        help="index an embeddings file",
        description="Index every item of an embeddings file (tripletlab embed) and write the "
        "index file atomically: nothing is written when building fails.",
    )
    b.add_argument("--embeddings", required=True, metavar="FILE.npz", help="embeddings file")
    b.add_argument("--out", required=True, metavar="INDEX", help="the index file to write")
    b.add_argument(
        "--distance",
        help=f"{', '.join(DISTANCES)} (default: the embeddings file's, else {d.distance})",
    )
    b.add_argument(
        "--backend",
        help=f"{', '.join(BACKENDS)} (default exact; faiss when --faiss-index is given)",
    )
    b.add_argument(
        "--faiss-index",
        help=f"{', '.join(FAISS_INDEXES)}: exact, graph (HNSW) or inverted lists (default "
        f"{d.faiss_index})",
    )
    g = b.add_argument_group("faiss")
    g.add_argument(
        "--hnsw-m", type=int, default=d.hnsw_m, help=f"HNSW links per node, M (default {d.hnsw_m})"
    )
    g.add_argument(
        "--ef-construction",
        type=int,
        default=d.ef_construction,
        help=f"HNSW candidates while building (default {d.ef_construction})",
    )
    g.add_argument(
        "--ef-search",
        type=int,
        default=d.ef_search,
        help=f"HNSW candidates while searching, stored in the index (default {d.ef_search})",
    )
    g.add_argument("--nlist", type=int, help="IVF lists (default sqrt(N), at most N/39)")
    g.add_argument(
        "--nprobe",
        type=int,
        default=d.nprobe,
        help=f"IVF lists searched per query, stored in the index (default {d.nprobe})",
    )


def _add_search_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "search",
        help="find the nearest indexed items of queries",
        description="Search an index with the embeddings of a file, or with image files "
        "embedded by the run the index came from; print (query, rank, id, label, distance).",
    )
    p.add_argument("index", metavar="INDEX", help="an index file (tripletlab index build)")
    queries = p.add_mutually_exclusive_group(required=True)
    queries.add_argument("--embeddings", metavar="FILE.npz", help="queries: an embeddings file")
    queries.add_argument("--images", nargs="+", metavar="PATH", help="queries: image files")
    p.add_argument("--k", type=int, default=5, help="neighbours per query (default 5)")
    p.add_argument(
        "--grid",
        metavar="OUT.png",
        help=f"draw the first {GRID_MAX_QUERIES} queries and their neighbours (items: image "
        "files, or the dataset items of `tripletlab embed`)",
    )
    p.add_argument(
        "--run", metavar="RUN_DIR", help="the run that embeds --images (default: the index's)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--dataset",
        help="where the grid reads the indexed items' images: imagefolder:PATH (ids relative "
        "to PATH) or the dataset of train/I and test/I ids (default: the index's)",
    )
    p.add_argument("--data-dir", help="folder holding the IDX files (default: the run's)")
    p.add_argument(
        "--threshold",
        metavar="NAME|DISTANCE",
        help=f"{_THRESHOLD_HELP}: mark each neighbour within or beyond it (faded in the grid)",
    )
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (default: the index's)")
    p.add_argument("--nprobe", type=int, help="IVF lists searched (default: the index's)")
    p.add_argument(
        "--limit",
        type=int,
        default=20,
        help="print the neighbours of the first N queries (default 20; 0: all)",
    )


def _add_calibrate_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "calibrate",
        help="choose match thresholds on labelled embeddings",
        description="Search labelled calibration embeddings in the index (an item does not "
        "match itself); store the distance threshold of maximal F1 and those reaching each "
        "target precision in the index file (rewritten atomically).",
    )
    p.add_argument("index", metavar="INDEX", help="an index file (tripletlab index build)")
    p.add_argument(
        "--embeddings", required=True, metavar="CAL.npz", help="labelled embeddings file"
    )
    p.add_argument(
        "--precision",
        type=float,
        nargs="+",
        default=list(DEFAULT_PRECISIONS),
        metavar="P",
        help="target precisions (default 0.9 0.99)",
    )
    p.add_argument("--plot", metavar="PR.png", help="precision, recall and F1 vs threshold")


def _add_match_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "match",
        help="answer each query with the nearest label, or unknown beyond the threshold",
        description="Find each query's nearest indexed item and answer its label when it "
        "lies within the threshold (by default the max-F1 threshold that `tripletlab "
        "calibrate` stored in the index), else `unknown`; print (query, answer, nearest id, "
        "distance), one line per query.",
    )
    p.add_argument("index", metavar="INDEX", help="an index file (tripletlab index build)")
    queries = p.add_mutually_exclusive_group(required=True)
    queries.add_argument("--embeddings", metavar="FILE.npz", help="queries: an embeddings file")
    queries.add_argument("--images", nargs="+", metavar="PATH", help="queries: image files")
    p.add_argument(
        "--threshold",
        default=MAX_F1,
        metavar="NAME|DISTANCE",
        help=f"{_THRESHOLD_HELP} (default {MAX_F1})",
    )
    p.add_argument(
        "--run", metavar="RUN_DIR", help="the run that embeds --images (default: the index's)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")


def _add_search_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _add_index_parser(sub)
    _add_search_parser(sub)
    _add_calibrate_parser(sub)
    _add_match_parser(sub)


def cmd_index(ns: argparse.Namespace) -> int:
    config = IndexBuildConfig(
        embeddings=ns.embeddings,
        out=ns.out,
        index=IndexConfig(
            distance=ns.distance or IndexConfig.distance,
            backend=ns.backend or ("faiss" if ns.faiss_index else "exact"),
            faiss_index=ns.faiss_index or IndexConfig.faiss_index,
            hnsw_m=ns.hnsw_m,
            ef_construction=ns.ef_construction,
            ef_search=ns.ef_search,
            nlist=ns.nlist,
            nprobe=ns.nprobe,
        ),
        distance_from_file=ns.distance is None,
    )
    index = run_index_build(config)
    print(
        f"wrote {config.out}: {len(index):,} items of dimension {index.dim}, "
        f"{index.config.describe()}"
    )
    return 0


def cmd_search(ns: argparse.Namespace) -> int:
    config = SearchConfig(
        index=ns.index,
        embeddings=ns.embeddings,
        images=tuple(ns.images or ()),
        k=ns.k,
        grid=ns.grid,
        run=ns.run,
        device=ns.device,
        ef_search=ns.ef_search,
        nprobe=ns.nprobe,
        dataset=ns.dataset,
        data_dir=ns.data_dir,
        threshold=ns.threshold,
    )
    out = run_search(config)
    print(format_search(out, limit=ns.limit or None))
    shown = len(out.query_ids) if not ns.limit else min(ns.limit, len(out.query_ids))
    if shown < len(out.query_ids):
        print(f"(the first {shown} of {len(out.query_ids):,} queries; --limit 0 prints all)")
    if out.threshold is not None:
        print(f"threshold {out.threshold.describe()}: neighbours farther are marked beyond")
    if out.note:
        print(f"tripletlab: {out.note}", file=sys.stderr)
    if out.grid is not None:
        print(f"grid: {out.grid}")
    return 0


def cmd_calibrate(ns: argparse.Namespace) -> int:
    config = CalibrateConfig(
        index=ns.index, embeddings=ns.embeddings, precisions=tuple(ns.precision), plot=ns.plot
    )
    out = run_calibrate(config)
    print(format_calibration(out.calibration))
    print(f"wrote the thresholds into {out.index}")
    if out.plot is not None:
        print(f"plot: {out.plot}")
    return 0


def cmd_match(ns: argparse.Namespace) -> int:
    config = MatchConfig(
        index=ns.index,
        embeddings=ns.embeddings,
        images=tuple(ns.images or ()),
        threshold=ns.threshold,
        run=ns.run,
        device=ns.device,
    )
    out = run_match(config)
    print(format_match(out))
    print(
        f"threshold {out.threshold.describe()}: {out.matched} of {len(out.query_ids):,} "
        "queries matched"
    )
    return 0


#: The search subcommands, dispatched by ``main``.
SEARCH_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "search": cmd_search,
    "calibrate": cmd_calibrate,
    "match": cmd_match,
}
