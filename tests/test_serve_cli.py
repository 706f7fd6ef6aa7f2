"""``tripletlab serve`` on the command line: one-line errors (exit 2), the extra's install
hint, the warning off 127.0.0.1, the token from the environment, and a real server answering
over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import run
from serve_helpers import copy_run, digit_png, running_server

from tripletlab.cli import serve as cli_serve
from tripletlab.serve import app as serve_app
from tripletlab.serve import is_loopback


class Recorded:
    """Stands in for load_gallery and serve: records the config, starts nothing."""

    def __init__(self) -> None:
        self.configs: list[Any] = []

    def load(self, config: Any, progress: Any = None) -> Any:
        self.configs.append(config)

        class Fake:
            threshold = None
            notes: tuple[str, ...] = ()
            warnings: tuple[str, ...] = ()
            index = type("I", (), {"dim": 64})()

            def __len__(self) -> int:
                return 3

        return Fake()

    def serve(self, gallery: Any, config: Any) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    r = Recorded()
    monkeypatch.setattr(cli_serve, "load_gallery", r.load)
    monkeypatch.setattr(cli_serve, "serve", r.serve)
    monkeypatch.delenv("TRIPLETLAB_TOKEN", raising=False)
    return r


def test_without_the_extra_one_line_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(serve_app, "WEB_MISSING", "fastapi")
    code, out, err = run(["serve", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "pip install 'tripletlab[serve]'" in err


def test_tripletlab_and_its_cli_import_without_fastapi() -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "import tripletlab, tripletlab.cli, tripletlab.serve\n"
        "from tripletlab.serve.app import WEB_MISSING; print(WEB_MISSING)\n"
        "from tripletlab.cli import main; sys.exit(main(['serve', 'nowhere']))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stdout.strip() in ("fastapi", "uvicorn")
    assert "pip install 'tripletlab[serve]'" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--k", "0"], "--k must be between 1 and 100"),
        (["--k", "101"], "--k must be between 1 and 100"),
        (["--port", "70000"], "--port"),
        (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--device", "tpu"], "device"),
        (["--token", " "], "--token is empty"),
        (["--token", "a b"], "--token must be printable ASCII"),
        (["--token", "a;b"], "--token must be printable ASCII"),
    ],
)
def test_bad_options_are_one_line_errors(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], flags: list[str], words: str
) -> None:
    code, _, err = run(["serve", "RUN", *flags], capsys)
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert recorded.configs == []


def test_a_missing_run_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(["serve", str(tmp_path / "missing"), "--quiet"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("tripletlab: error:"), err


def test_another_host_warns_and_the_token_comes_from_the_environment(
    recorded: Recorded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run(["serve", "RUN"], capsys)
    assert code == 0 and err == "" and "http://127.0.0.1:8000/" in out
    assert recorded.configs[-1].token is None and recorded.configs[-1].host == "127.0.0.1"
    code, _, err = run(["serve", "RUN", "--host", "0.0.0.0"], capsys)
    assert code == 0 and "warning: listening on 0.0.0.0" in err and "no token" in err
    monkeypatch.setenv("TRIPLETLAB_TOKEN", "from-env")
    code, _, err = run(["serve", "RUN", "--host", "0.0.0.0"], capsys)
    assert "a bearer token is required" in err and recorded.configs[-1].token == "from-env"
    run(["serve", "RUN", "--token", "flag"], capsys)
    assert recorded.configs[-1].token == "flag"


def test_loopback_hosts() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "localhost", "::1"]))
    assert not any(map(is_loopback, ["0.0.0.0", "192.168.1.2", "::", "example.org"]))


def test_a_real_server_answers_over_http(digits_run: Path, tmp_path: Path) -> None:
    run_dir = copy_run(digits_run, tmp_path)
    with running_server([str(run_dir), "--device", "cpu", "--k", "3"]) as url:
        with urllib.request.urlopen(url + "/api/health") as r:
            health = json.load(r)
        assert health["k"] == 3 and health["items"] > 1000
        boundary = "tripletlabboundary"
        head = (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="image"; filename="q.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        body = head.encode() + digit_png(0) + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(
            url + "/api/search",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request) as r:
            result = json.load(r)
        assert len(result["neighbors"]) == 3
        with urllib.request.urlopen(url + result["neighbors"][0]["thumbnail"]) as r:
            assert r.headers["content-type"] == "image/png"
