"""Shared by the tests of :mod:`tripletlab.serve`: a copy of the digits run (the map cache is
written into it), images as uploads, and the one-line error check."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from tripletlab.data import read_image_file
from tripletlab.embedding import embed
from tripletlab.serve import Gallery


def copy_run(digits_run: Path, folder: Path) -> Path:
    """The digits run copied, so that the map cached in it stays out of the shared run."""
    out = folder / "run"
    shutil.copytree(digits_run, out)
    return out


def png(image: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 as PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def digit_png(seed: int, side: int = 8) -> bytes:
    """A side x side grey picture of noise (not an item of the index)."""
    g = np.random.default_rng(seed)
    return png((g.random((side, side)) * 255).astype(np.uint8))


def embed_bytes(gallery: Gallery, data: bytes, folder: Path) -> np.ndarray:
    """The expected query vector: the file read as ``tripletlab search --images`` reads it."""
    path = folder / "query.png"
    path.write_bytes(data)
    c, size, _ = gallery.run.image_shape
    image = read_image_file(path, size, c)[None]
    run = gallery.run
    vector = embed(run.model, image, run.stats, run.device, run.embed_mode())
    return vector.cpu().numpy()


def assert_one_line_error(body: object) -> str:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    message = body["error"]
    assert isinstance(message, str) and message
    assert "\n" not in message and "Traceback" not in message
    return message


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(args: list[str], timeout: float = 120.0) -> Iterator[str]:
    """``tripletlab serve ARGS --port P`` in a subprocess; yields its URL once
    ``/api/health`` answers; stops it (SIGINT, then kill) however the block ends."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "tripletlab", "serve", *args, "--port", str(port), "--quiet"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the server stopped: {proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                with urllib.request.urlopen(url + "/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the server did not answer in time")
            time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
