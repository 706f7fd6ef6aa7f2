"""The HTML report: one self-contained file with escaped text, both metric layouts, every
picture embedded; and it renders in a real (headless) browser without console errors."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tripletlab.plots import plot_embedding, plot_learning_curves, plot_neighbors, write_projector
from tripletlab.report import metric_notes, metric_tables, render_report, write_report

NASTY = '<script>alert("x")</script> & "quotes" é'
FLAT = {"precision_at_1": 0.91234, "knn_gallery": "train", "num_test": 359}
GROUPED = {
    "seen": {"precision_at_1": 0.9, "map_at_r": 0.5},
    "unseen": {"precision_at_1": 0.6, "map_at_r": 0.25, "num_queries": 40},
    "train_seconds": 12.5,
}


def make_pictures(folder: Path) -> dict[str, Path]:
    """A few real, quick pictures (no t-SNE)."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    e = torch.randn(60, 2, generator=g) * 0.3 + torch.stack([y.float(), (y == 1).float()], 1)
    images = torch.randint(0, 256, (60, 1, 8, 8), generator=g, dtype=torch.uint8)
    history = [{"epoch": i, "loss": 1 / i, "fraction_active": 0.5 / i} for i in (1, 2, 3)]
    return {
        "learning_curves": plot_learning_curves(history, folder / "learning_curves.png"),
        "embedding_test_direct": plot_embedding(
            e, y, folder / "embedding_test_direct.png", method="direct", classes=["a", "b", NASTY]
        ),
        "neighbors_random": plot_neighbors(e, y, images, folder / "neighbors_random.png", k=4),
        "projector_config": write_projector(folder / "projector", e, y)["config"],
    }


def data_uris(text: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


def test_flat_and_grouped_metrics_both_render() -> None:
    flat = render_report(title="t", metrics=FLAT)
    assert "<th>value</th>" in flat and "0.9123" in flat and "<td>train</td>" in flat
    grouped = render_report(title="t", metrics=GROUPED)
    assert "<th>metric</th><th>seen</th><th>unseen</th>" in grouped
    assert re.search(r"<th>num_queries</th><td>-</td><td class=\"num\">40</td>", grouped)
    assert "<th>train_seconds</th>" in grouped  # scalars beside the groups are kept
    assert [t.columns for t in metric_tables(GROUPED)] == [("seen", "unseen"), ("value",)]


def test_notes_flag_a_held_out_pair_accuracy_below_its_floor() -> None:
    below = {"held_out_pair_accuracy": 0.85, "pair_floor": 0.9, "knn_gallery": "train"}
    (note,) = metric_notes(below)
    assert note.startswith("held_out_pair_accuracy 0.8500 is below pair_floor 0.9000")
    assert metric_notes({**below, "held_out_pair_accuracy": 0.95}) == []
    assert metric_notes({**below, "held_out_pair_accuracy": None}) == []  # not computed
    text = render_report(title="t", metrics=below)
    assert '<p class="note">held_out_pair_accuracy 0.8500 is below pair_floor 0.9000' in text
    close = {"held_out_pair_accuracy": 0.998351, "pair_floor": 0.998363}  # equal to 4 places
    (note,) = metric_notes(close)
    assert note.startswith("held_out_pair_accuracy 0.99835 is below pair_floor 0.99836")
    grouped = {"seen": {"pair_floor": 0.8, "held_out_pair_accuracy": 0.9}, "unseen": below}
    notes = metric_notes(grouped)
    assert notes[0].startswith("unseen: the images of the classes held out of training")
    assert notes[1].startswith("unseen: held_out_pair_accuracy 0.8500 is below") and len(notes) == 2


def test_notes_say_when_no_threshold_beats_the_pair_floor() -> None:
    floor = {"pair_accuracy": 0.99751, "pair_threshold": 0.0, "pair_floor": 0.99749}
    (note,) = metric_notes(floor)  # equal as printed (4 places): the threshold separates nothing
    assert note.startswith("pair_accuracy 0.9975 is at or below pair_floor 0.9975: no distance")
    assert "with many classes" in note
    assert metric_notes({**floor, "pair_accuracy": 0.9981}) == []
    assert metric_notes({**floor, "pair_accuracy": None}) == []
    (note,) = metric_notes({"unseen": floor, "seen": {**floor, "pair_accuracy": 0.999}})[1:]
    assert note.startswith("unseen: pair_accuracy 0.9975 is at or below pair_floor")
    # collapsed embeddings: every pair at distance 0 is called "same", below the floor
    (note,) = metric_notes({"pair_accuracy": 0.077, "pair_floor": 0.923})
    assert note.startswith("pair_accuracy 0.0770 is at or below pair_floor 0.9230")
    (note,) = metric_notes({"pair_accuracy": 0.3, "pair_floor": 0.4})  # few classes
    assert "with many classes" not in note


def test_notes_say_when_the_test_classes_were_not_trained_on() -> None:
    (note,) = metric_notes({"knn_gallery": "leave-one-out", "split": "test"})
    assert note.startswith("the test classes are not among the training classes")
    assert metric_notes({"knn_gallery": "train"}) == []


def test_all_text_is_escaped(tmp_path: Path) -> None:
    text = render_report(
        title=NASTY,
        config={"note": NASTY, NASTY: [1, NASTY]},
        metrics={NASTY: {NASTY: 1.0}},
        pictures={NASTY: make_pictures(tmp_path)["learning_curves"]},
    )
    assert "<script" not in text and "alert(&quot;x&quot;)" in text
    assert text.count("&lt;script&gt;") >= 5


def test_a_nested_config_gives_a_row_per_setting() -> None:
    text = render_report(title="t", config={"data": {"dataset": "digits"}, "optim": {"lr": 0.01}})
    assert "<th>data.dataset</th><td>digits</td>" in text
    assert '<th>optim.lr</th><td class="num">0.0100</td>' in text


def test_every_picture_is_embedded(tmp_path: Path) -> None:
    pictures = make_pictures(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "digits", "note": NASTY}))
    (tmp_path / "metrics.json").write_text(json.dumps(GROUPED))
    path = write_report(tmp_path, pictures=pictures)
    assert path == tmp_path / "report.html"
    raw = path.read_bytes()
    raw.decode("ascii")  # pure ASCII, whatever the locale
    text = raw.decode("ascii")
    pngs = [p for p in pictures.values() if p.suffix == ".png"]
    assert sorted(data_uris(text)) == sorted(p.read_bytes() for p in pngs)
    assert "<th>dataset</th><td>digits</td>" in text and "<th>seen</th>" in text
    assert "projector/projector_config.pbtxt" in text  # listed, relative to the run folder
    assert 'src="file:' not in text and "<script" not in text
    assert len(set(re.findall(r'id="([^"]+)"', text))) == len(re.findall(r'id="', text))
    assert not list(tmp_path.glob(".*.tmp"))


def test_missing_or_broken_pictures_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found") as err:
        render_report(title="t", pictures={"learning_curves": tmp_path / "nope.png"})
    assert "\n" not in str(err.value)
    (tmp_path / "fake.png").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="not a PNG"):
        render_report(title="t", pictures={"x": tmp_path / "fake.png"})
    with pytest.raises(ValueError, match="does not exist"):
        write_report(tmp_path / "missing")
    (tmp_path / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match="not readable JSON"):
        write_report(tmp_path)


def test_an_empty_run_still_gives_a_page(tmp_path: Path) -> None:
    text = write_report(tmp_path, title="empty").read_text()
    assert "Nothing to report yet." in text and text.rstrip().endswith("</html>")


# ---------------------------------------------------------------------------------- browser

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")

# Loads a copy of the report and, once every image has had its chance to load, logs how
# many images there are and which failed to decode (a broken data URI logs nothing by itself).
PROBE = """<script>
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const broken = images.filter((i) => !i.complete || i.naturalWidth === 0).map((i) => i.alt);
  console.log("PROBE images=" + images.length + " broken=" + broken.length + " " + broken.join());
});
</script>"""


def run_browser(page: Path, profile: Path, screenshot: Path) -> list[str]:
    """Open ``page`` in headless Chromium; return its console lines and write a screenshot.

    With ``--enable-logging=stderr --v=0`` Chromium prints every console message of the page
    (``console.log``/``error``/``warn`` and uncaught exceptions, as ``Uncaught ...``) on stderr
    as ``...:INFO:CONSOLE:<line>] "<message>", source: <url> (<line>)``. The report has no
    script, so any such line is a failure; the probe page below checks that the capture works.
    """
    cmd = [
        str(BROWSER),
        "--headless=new",
        "--no-sandbox",  # tests may run as root in containers
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",  # never the user's profile
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2000",
        f"--screenshot={screenshot}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


@pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser on PATH")
def test_report_renders_in_chromium_without_console_errors(tmp_path: Path) -> None:
    pictures = make_pictures(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "digits", "note": NASTY}))
    (tmp_path / "metrics.json").write_text(json.dumps(GROUPED))
    report = write_report(tmp_path, pictures=pictures)

    console = run_browser(report, tmp_path / "profile", tmp_path / "shot.png")
    assert console == [], "\n".join(console)
    with Image.open(tmp_path / "shot.png") as im:
        gray = np.asarray(im.convert("L"), dtype=float)
    assert gray.shape == (2000, 1280)
    assert gray.std() > 10 and (gray < 200).mean() > 0.02, "the screenshot is blank"

    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    lines = run_browser(probe, tmp_path / "profile", tmp_path / "probe.png")
    expected = sum(p.suffix == ".png" for p in pictures.values())
    assert any(f'"PROBE images={expected} broken=0 "' in line for line in lines), (
        "the probe did not report every image loaded (or console capture no longer works "
        "with this Chromium):\n" + "\n".join(lines)
    )
    assert len(lines) == 1, "\n".join(lines)


def test_baseline_notes_are_notes_not_a_table_row() -> None:
    note = "baseline raw_pixels: no retrieval score: every class has a single test image"
    metrics = {
        "seen": {"p1": None, "baselines": {"raw_pixels": {"p1": None}, "notes": [note]}},
        "unseen": {"p1": 0.9, "baselines": {"raw_pixels": {"p1": 0.7}}},
    }
    rows = [name for table in metric_tables(metrics) for name, _ in table.rows]
    assert "baseline raw_pixels p1" in rows and not any("notes" in r for r in rows)
    assert note in metric_notes(metrics)


def test_notes_say_how_to_score_held_out_classes_when_nothing_could_be_found() -> None:
    few = {"retrieval_gallery": "leave-one-out", "num_test": 1223, "num_excluded_queries": 1223}
    assert metric_notes(few)[-1].startswith("with a few images per class, score classes held")
    assert "--unseen-classes N" in metric_notes(few)[-1]
    some = few | {"num_excluded_queries": 1000}  # some queries found a classmate: no hint
    assert not any("--unseen-classes" in n for n in metric_notes(some))
    grouped = {"unseen": few, "seen": few | {"num_excluded_queries": 3}}
    assert not any("--unseen-classes" in n for n in metric_notes(grouped))
