"""``tripletlab serve``'s API in-process (FastAPI's TestClient, no network): shapes, statuses,
results equal to :meth:`EmbeddingIndex.search`, every bad input answered with one line, the
token and the upload limit."""

from __future__ import annotations

import errno
import io
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import needs_faiss
from PIL import Image
from serve_helpers import assert_one_line_error, copy_run, digit_png, embed_bytes, png

from tripletlab.inference import embed_run
from tripletlab.io import load_npz
from tripletlab.search import EmbeddingIndex, IndexConfig
from tripletlab.search.commands import build_index
from tripletlab.serve import MAX_K, Gallery, ServeConfig, create_app, load_gallery
from tripletlab.serve import gallery as serve_gallery
from tripletlab.serve.app import WORKER_THREADS
from tripletlab.serve.gallery import (
    INDEX_CACHE,
    KEY_FIELD,
    class_precision_at_1,
    dataset_stamp,
    gallery_key,
)

pytest.importorskip("fastapi", reason="the [serve] extra is not installed")
pytest.importorskip("httpx2", reason="httpx2 (Starlette's TestClient) is not installed")

import anyio.to_thread
from fastapi.testclient import TestClient

LIMIT = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def run_dir(digits_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_run(digits_run, tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def gallery(run_dir: Path) -> Gallery:
    """The index built at start from the run's gallery (the digits training split)."""
    return load_gallery(ServeConfig(run=str(run_dir), device="cpu", k=5))


@pytest.fixture(scope="module")
def client(gallery: Gallery) -> TestClient:
    return TestClient(create_app(gallery, max_upload_bytes=LIMIT))


def upload(client: TestClient, data: bytes, **form: Any) -> Any:
    files = {"image": ("q.png", data, "image/png")}
    return client.post("/api/search", files=files, data={k: str(v) for k, v in form.items()})


# ------------------------------------------------------------------------------ answers


def test_health_says_what_is_served(client: TestClient, gallery: Gallery) -> None:
    r = client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ok" and body["items"] == len(gallery) > 1000
    assert body["k"] == 5 and body["max_k"] == MAX_K and body["threshold"] is None
    assert body["dim"] == gallery.index.dim and body["item_search"] is True
    assert r.headers["content-security-policy"].startswith("default-src 'self'")


def test_upload_search_equals_the_index_search(
    client: TestClient, gallery: Gallery, tmp_path: Path
) -> None:
    data = digit_png(0)
    r = upload(client, data, k=7)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"neighbors", "match"}
    expected = gallery.index.search(torch.from_numpy(embed_bytes(gallery, data, tmp_path)), 7)
    got = body["neighbors"]
    assert [n["id"] for n in got] == list(expected.ids[0])
    assert [n["rank"] for n in got] == list(range(1, 8))
    np.testing.assert_allclose([n["distance"] for n in got], expected.distances[0], atol=1e-6)
    labels = [gallery.index.classes[y] for y in expected.labels[0].tolist()]
    assert [n["label"] for n in got] == labels
    for n in got:
        assert set(n) >= {"id", "label", "distance", "thumbnail"}
        assert n["thumbnail"] == f"/api/thumbnails/{n['row']}.png"
    match = body["match"]
    assert set(match) == {"label", "distance", "threshold", "known"}
    assert match == {
        "label": labels[0],
        "distance": got[0]["distance"],
        "threshold": None,
        "known": None,
    }
    assert len(upload(client, data).json()["neighbors"]) == 5  # the default --k


def test_item_search_equals_the_index_search(client: TestClient, gallery: Gallery) -> None:
    assert gallery.vectors is not None
    for row in (0, 17, len(gallery) - 1):
        item = gallery.index.ids[row]
        assert "/" in item  # digits ids are train/I: the route takes slashes
        r = client.get(f"/api/items/{item}/neighbors", params={"k": 4})
        assert r.status_code == 200, r.text
        got = r.json()["neighbors"]
        expected = gallery.index.search(gallery.vectors[row : row + 1], 4)
        assert [n["id"] for n in got] == list(expected.ids[0])
        np.testing.assert_allclose([n["distance"] for n in got], expected.distances[0])
        assert got[0]["id"] == item and got[0]["distance"] == pytest.approx(0.0, abs=1e-2)
    encoded = client.get("/api/items/train%2F3/neighbors")  # encodeURIComponent's form
    assert encoded.status_code == 200 and encoded.json()["neighbors"][0]["id"] == "train/3"


def test_thumbnails_are_pngs_of_indexed_items_only(client: TestClient, gallery: Gallery) -> None:
    r = client.get("/api/thumbnails/0.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(r.content)) as im:
        assert im.size == (8, 8)
    assert client.get("/api/thumbnails/0.png").content == r.content  # from the cache
    for bad, status in ((f"{len(gallery)}", 404), ("-1", 404), ("abc", 422)):
        got = client.get(f"/api/thumbnails/{bad}.png")
        assert got.status_code == status, bad
        assert_one_line_error(got.json())
    for path in ("/api/thumbnails/..%2F..%2Fetc%2Fpasswd.png", "/static/../config.json"):
        assert client.get(path).status_code in (404, 422), path


def test_the_thumbnail_cache_is_bounded_in_bytes(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = len(gallery.thumbnail(0))
    monkeypatch.setattr(serve_gallery, "THUMBNAIL_CACHE_BYTES", 3 * one + one // 2)
    for row in range(12):
        gallery.thumbnail(row)
    count, size = gallery.thumbnails_cached()
    assert 1 <= count <= 4 and size <= 3 * one + one // 2
    assert gallery.thumbnail(11) and gallery.thumbnails_cached() == (count, size)  # a hit


def test_map_is_cached_beside_the_gallery(
    client: TestClient, gallery: Gallery, run_dir: Path
) -> None:
    r = client.get("/api/map")
    assert r.status_code == 200
    body = r.json()
    assert body["method"] in ("pca", "umap")
    n = len(gallery)
    assert len(body["x"]) == len(body["y"]) == len(body["labels"]) == len(body["ids"]) == n
    assert body["ids"] == list(gallery.index.ids)
    cache = run_dir / "serve" / "index.map.npz"  # beside the cached index
    assert cache.is_file()
    again = load_gallery(ServeConfig(run=str(run_dir), device="cpu"))
    stamp = cache.stat().st_mtime_ns
    assert again.map()["x"] == body["x"] and cache.stat().st_mtime_ns == stamp  # read back


def test_metrics_panel_lists_classes_worst_first(client: TestClient, gallery: Gallery) -> None:
    assert gallery.wait_panel(60)  # started by create_app
    body = client.get("/api/metrics").json()
    assert body["status"] == "ready"
    assert body["metrics"]["precision_at_1"] > 0  # the run's metrics.json
    rows = body["per_class"]
    assert len(rows) == len(gallery.index.classes) == 10
    values = [r["precision_at_1"] for r in rows]
    assert values == sorted(values)
    assert sum(r["items"] for r in rows) == len(gallery)
    worst = rows[0]["label_id"]
    hard = client.get(f"/api/classes/{worst}/hardest", params={"n": 3})
    assert hard.status_code == 200
    items = hard.json()["items"]
    assert 1 <= len(items) <= 3
    labels = gallery.index.labels
    assert all(int(labels[it["row"]]) == worst for it in items)
    assert client.get("/api/classes/99/hardest").status_code == 404
    assert client.get("/api/classes/0/hardest", params={"n": 0}).status_code == 422


def test_a_calibrated_index_gives_a_verdict(run_dir: Path, tmp_path: Path) -> None:
    loaded = load_gallery(ServeConfig(run=str(run_dir), device="cpu"))
    test = embed_run(loaded.run, split="test").data
    index = build_index(embed_run(loaded.run, split="train").data, loaded.index.config)
    index.calibrate(test.embeddings, test.labels)
    path = tmp_path / "index.npz"
    index.save(path)
    served = load_gallery(ServeConfig(run=str(run_dir), index=str(path), device="cpu"))
    assert served.threshold is not None and served.threshold.name == "max_f1"
    client = TestClient(create_app(served, max_upload_bytes=LIMIT))
    assert client.get("/api/health").json()["threshold"] == served.threshold.value
    row = 5
    item = client.get(f"/api/items/{index.ids[row]}/neighbors").json()
    label = index.classes[int(index.labels[row])]
    assert item["match"] == {
        "label": label,
        "distance": pytest.approx(0.0, abs=1e-2),
        "threshold": served.threshold.value,
        "known": True,
    }
    far = client.get("/api/items/train/0/neighbors").json()["match"]
    assert far["known"] is True
    strict = load_gallery(
        ServeConfig(run=str(run_dir), index=str(path), device="cpu", threshold="0")
    )
    body = TestClient(create_app(strict, max_upload_bytes=LIMIT))
    answer = upload(body, digit_png(1)).json()["match"]
    assert answer["known"] is False and answer["label"] is None and answer["threshold"] == 0.0
    assert (tmp_path / "index.map.npz").exists() is False  # the map is made when asked for


def test_class_precision_at_1_equals_a_loop() -> None:
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        n = 10 + 20 * seed
        labels = torch.randint(-1, 6, (n,), generator=g)
        nearest = torch.randint(0, 6, (n,), generator=g)
        expected = []
        for c in sorted({int(v) for v in labels if v >= 0}):
            members = [i for i in range(n) if int(labels[i]) == c]
            if len(members) >= 2:
                hits = sum(int(nearest[i]) == c for i in members)
                expected.append((c, len(members), hits / len(members)))
        expected.sort(key=lambda r: (r[2], r[0]))
        got = class_precision_at_1(labels, nearest)
        assert [r[:2] for r in got] == [r[:2] for r in expected]
        np.testing.assert_allclose([r[2] for r in got], [r[2] for r in expected])


def test_the_panel_is_computed_off_the_request_path(
    run_dir: Path, gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the panel's leave-one-out search runs (held here by a gate), /api/metrics says
    "computing" at once, the hardest queries are a 503, and searches are answered."""
    served = load_gallery(ServeConfig(run=str(run_dir), device="cpu"))  # the cached index
    gate = threading.Event()
    real = served.index.search

    def gated(queries: torch.Tensor, k: int) -> Any:
        if queries.shape[0] > 1:  # the panel's chunks; a request asks one query
            assert gate.wait(60)
        return real(queries, k)

    monkeypatch.setattr(served.index, "search", gated)
    client = TestClient(create_app(served, max_upload_bytes=LIMIT))
    try:
        t0 = time.monotonic()
        body = client.get("/api/metrics").json()
        assert body["status"] == "computing" and body["per_class"] == []
        assert body["metrics"]["precision_at_1"] > 0 and body["items"] == len(served)
        hard = client.get("/api/classes/0/hardest")
        assert hard.status_code == 503 and "computed" in assert_one_line_error(hard.json())
        assert upload(client, digit_png(2)).status_code == 200
        assert client.get("/api/items/train/1/neighbors").status_code == 200
        assert time.monotonic() - t0 < 20  # nothing waited for the gate (60 s)
        assert client.get("/api/metrics").json()["status"] == "computing"
    finally:
        gate.set()
    assert served.wait_panel(60)
    body = client.get("/api/metrics").json()
    assert body["status"] == "ready" and len(body["per_class"]) == 10
    assert client.get("/api/metrics").json() == body
    assert client.get("/api/classes/0/hardest").status_code == 200


def test_the_routes_run_on_a_few_threads(gallery: Gallery) -> None:
    """anyio's 40 threads would each grow a malloc arena and an OpenMP team (the memory
    growth under load, docs/benchmarks.md): the app's lifespan sets WORKER_THREADS."""

    async def tokens() -> float:
        return float(anyio.to_thread.current_default_thread_limiter().total_tokens)

    with TestClient(create_app(gallery, max_upload_bytes=LIMIT)) as client:
        assert client.portal is not None
        assert client.portal.call(tokens) == WORKER_THREADS
        assert client.get("/api/health").status_code == 200


# ------------------------------------------------------------------------------ index cache


def count_embeddings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, each gallery embedded at start appends to the list returned."""
    calls: list[int] = []
    real = embed_run

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(serve_gallery, "embed_run", counting)
    return calls


def test_the_gallery_index_is_cached_and_rebuilt_for_another_checkpoint(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(digits_run, tmp_path)
    calls = count_embeddings(monkeypatch)
    config = ServeConfig(run=str(run), device="cpu")
    first = load_gallery(config)
    cache = run / INDEX_CACHE
    assert calls == [1] and cache.is_file() and first.warnings == []
    assert first.index.meta[KEY_FIELD] == gallery_key(first.run)
    first_map = first.map()

    second = load_gallery(config)
    assert calls == [1]  # read back, not embedded again
    assert first.notes[0].startswith("the gallery's index: built from the training split")
    assert second.notes[0] == f"the gallery's index: reused from {cache}"
    assert second.index.ids == first.index.ids
    assert first.vectors is not None and second.vectors is not None
    assert torch.equal(second.vectors, first.vectors)
    stamp = (run / "serve" / "index.map.npz").stat().st_mtime_ns
    assert second.map()["x"] == first_map["x"]  # the map beside it still fits
    assert (run / "serve" / "index.map.npz").stat().st_mtime_ns == stamp

    checkpoint = run / "checkpoints" / "best.pt"  # retrained: other weights, same shapes
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    name = next(k for k, v in saved["model"].items() if v.is_floating_point() and v.ndim > 1)
    saved["model"][name] = saved["model"][name] + 0.05
    torch.save(saved, checkpoint)
    third = load_gallery(config)
    assert calls == [1, 1]
    assert third.vectors is not None and not torch.equal(third.vectors, first.vectors)
    assert EmbeddingIndex.load(cache).meta[KEY_FIELD] == gallery_key(third.run)
    assert third.map()["x"] != first_map["x"]  # the map follows the new index
    assert str(load_npz(run / "serve" / "index.map.npz")["key"]) != ""
    load_gallery(config)
    assert calls == [1, 1]

    cache.write_bytes(b"not an index")  # a damaged cache is rebuilt
    load_gallery(config)
    assert calls == [1, 1, 1] and EmbeddingIndex.load(cache).meta[KEY_FIELD]


def test_a_read_only_run_is_served_from_memory_with_one_warning(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy_run(digits_run, tmp_path)
    calls = count_embeddings(monkeypatch)
    real_open = os.open

    def read_only(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if str(run) in str(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)  # as root too, who writes anywhere
    served = load_gallery(ServeConfig(run=str(run), device="cpu"))
    assert calls == [1] and len(served.warnings) == 1
    assert "read-only" in served.warnings[0] and "embeds it again" in served.warnings[0]
    assert not (run / INDEX_CACHE).exists()
    client = TestClient(create_app(served, max_upload_bytes=LIMIT))
    assert upload(client, digit_png(0)).status_code == 200
    assert client.get("/api/map").status_code == 200  # kept in memory
    assert served.wait_panel(60)


def test_a_dataset_folder_stamp_changes_with_its_files(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "1.png").write_bytes(digit_png(0))
    spec = f"imagefolder:{folder}"
    before = dataset_stamp(spec)
    assert before is not None and before[0] == 1
    assert dataset_stamp(spec) == before
    os.utime(folder / "cat", ns=(1, 1))
    (folder / "cat" / "2.png").write_bytes(digit_png(1))
    assert dataset_stamp(spec) != before
    assert dataset_stamp("digits") is None and dataset_stamp("imagefolder:/no/such") is None


# ------------------------------------------------------------------------------ bad input


def cmyk_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("CMYK", (8, 8), (10, 20, 30, 40)).save(out, format="JPEG")
    return out.getvalue()


def bomb_png() -> bytes:
    """7,000 x 7,000 black pixels (49 megapixels) in about 50 kB."""
    out = io.BytesIO()
    Image.new("1", (7000, 7000)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"hello, this is text", 400, "not an image"),
        (b"%PDF-1.4 not really", 400, "not an image"),
        (digit_png(0, side=64)[:2000], 400, "damaged"),
        (cmyk_jpeg(), 400, "4 colour channels"),
        (bomb_png(), 400, "decompression bomb"),
    ],
    ids=["empty", "text", "pdf", "truncated", "cmyk", "bomb"],
)
def test_bad_uploads_get_400_with_one_line(
    client: TestClient, data: bytes, status: int, words: str
) -> None:
    r = upload(client, data)
    assert r.status_code == status, r.text
    assert words in assert_one_line_error(r.json())


def test_colour_and_alpha_uploads_are_read(client: TestClient) -> None:
    g = np.random.default_rng(0)
    rgb = (g.random((20, 30, 3)) * 255).astype(np.uint8)
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=2)
    for data in (png(rgb), png(rgba)):
        assert upload(client, data).status_code == 200


def test_uploads_over_the_limit_get_413(gallery: Gallery) -> None:
    small = TestClient(create_app(gallery, max_upload_bytes=1000))
    big = png((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8))
    assert len(big) > 1000
    r = upload(small, big)
    assert r.status_code == 413
    assert "limit" in assert_one_line_error(r.json())
    huge = b"x" * (200 * 1024)  # over the limit and the form's overhead: refused unread
    r = small.post("/api/search", content=huge, headers={"content-type": "image/png"})
    assert r.status_code == 413
    streamed = small.post(  # no Content-Length: counted while it streams
        "/api/search",
        content=iter([b"x" * 50_000] * 4),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert streamed.status_code == 413
    assert upload(small, digit_png(0)).status_code == 200


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (("get", "/api/items/train/999999/neighbors", {}), 404),
        (("get", "/api/items/no-such-item/neighbors", {}), 404),
        (("get", "/api/items/train/0/neighbors", {"params": {"k": 0}}), 422),
        (("get", "/api/items/train/0/neighbors", {"params": {"k": MAX_K + 1}}), 422),
        (("get", "/api/items/train/0/neighbors", {"params": {"k": "many"}}), 422),
        (("post", "/api/search", {"data": {"k": "3"}}), 422),  # no image field
        (("post", "/api/search", {"json": {"image": "x"}}), 422),  # not multipart
        (
            (
                "post",
                "/api/search",
                {
                    "content": b"--x\r\ngarbage",
                    "headers": {"content-type": "multipart/form-data; boundary=x"},
                },
            ),
            422,
        ),
        (("get", "/api/nothing", {}), 404),
        (("delete", "/api/search", {}), 405),
    ],
    ids=[
        "unknown-row",
        "unknown-id",
        "k0",
        "k-big",
        "k-text",
        "no-image",
        "json",
        "broken",
        "route",
        "method",
    ],
)
def test_malformed_requests_get_one_line_errors(
    client: TestClient, request_: tuple[str, str, dict[str, Any]], status: int
) -> None:
    method, path, kwargs = request_
    r = client.request(method.upper(), path, **kwargs)
    assert r.status_code == status, r.text
    assert_one_line_error(r.json())


@pytest.mark.parametrize("k", [0, -1, MAX_K + 1, "x"])
def test_upload_k_out_of_range_gets_422(client: TestClient, k: object) -> None:
    r = upload(client, digit_png(0), k=k)
    assert r.status_code == 422
    assert "k" in assert_one_line_error(r.json())


def test_a_crash_is_a_500_without_traceback(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("secret internals /home/x")

    monkeypatch.setattr(gallery, "search_upload", broken)
    client = TestClient(create_app(gallery, max_upload_bytes=LIMIT), raise_server_exceptions=False)
    r = upload(client, digit_png(0))
    assert r.status_code == 500
    message = assert_one_line_error(r.json())
    assert "secret" not in message
    assert client.get("/api/health").status_code == 200  # still serving


# ------------------------------------------------------------------------------ token


def test_a_token_guards_every_request(gallery: Gallery) -> None:
    client = TestClient(create_app(gallery, token="s3cret", max_upload_bytes=LIMIT))
    for path in ("/", "/api/health", "/static/app.js", "/api/thumbnails/0.png", "/api/map"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert r.headers["www-authenticate"] == "Bearer"
        assert_one_line_error(r.json())
    assert client.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/api/health", headers={"Authorization": "s3cret"}).status_code == 401
    assert upload(client, digit_png(0)).status_code == 401
    ok = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/health", headers=ok).status_code == 200
    files = {"image": ("q.png", digit_png(0), "image/png")}
    assert client.post("/api/search", files=files, headers=ok).status_code == 200
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    r = client.get("/?token=s3cret", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    assert "HttpOnly" in r.headers["set-cookie"]
    assert client.get("/api/health").status_code == 200  # the cookie now
    assert client.get("/").status_code == 200


def test_the_page_and_its_files_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="/static/app.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    for name in ("app.js", "app.css"):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200
        assert "http://" not in r.text and "https://" not in r.text  # nothing from elsewhere


@needs_faiss
def test_a_faiss_index_searches_uploads_and_says_what_it_cannot(
    run_dir: Path, gallery: Gallery, tmp_path: Path
) -> None:
    config = IndexConfig(distance=gallery.index.config.distance, backend="faiss")
    data = embed_run(gallery.run, split="train").data
    path = tmp_path / "flat.npz"
    build_index(data, config).save(path)
    served = load_gallery(ServeConfig(run=str(run_dir), index=str(path), device="cpu"))
    client = TestClient(create_app(served, max_upload_bytes=LIMIT))
    assert client.get("/api/health").json()["item_search"] is False
    assert upload(client, digit_png(0)).status_code == 200
    for route in ("/api/items/train/0/neighbors", "/api/map", "/api/metrics"):
        r = client.get(route)
        assert r.status_code == 409, route
        assert "faiss" in assert_one_line_error(r.json())


def test_items_without_pictures_are_searched_and_noted(
    run_dir: Path, gallery: Gallery, tmp_path: Path
) -> None:
    n, dim = 40, gallery.index.dim
    index = EmbeddingIndex(dim, classes=("a", "b"))
    index.add(torch.randn(n, dim), torch.arange(n) % 2, [f"../../etc/passwd{i}" for i in range(n)])
    path = tmp_path / "plain.npz"
    index.save(path)
    served = load_gallery(ServeConfig(run=str(run_dir), index=str(path), device="cpu"))
    assert served.notes and served.notes[0].startswith("no thumbnails: the items are not image")
    client = TestClient(create_app(served, max_upload_bytes=LIMIT))
    r = client.get("/api/thumbnails/0.png")
    assert r.status_code == 404
    assert "no picture" in assert_one_line_error(r.json())
    body = upload(client, digit_png(0)).json()
    assert [nb["label"] for nb in body["neighbors"]][:1] in (["a"], ["b"])
    item = client.get("/api/items/../../etc/passwd3/neighbors")  # an id, never a path
    assert item.status_code in (200, 404)
    encoded = client.get("/api/items/..%2F..%2Fetc%2Fpasswd3/neighbors")
    assert (
        encoded.status_code == 200 and encoded.json()["neighbors"][0]["id"] == "../../etc/passwd3"
    )
