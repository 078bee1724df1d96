"""The demo page: valid HTML, self-contained (every file it links exists beside it, nothing remote),
the artefacts of the other stages on it, and (where Chromium is installed) a real browser render."""

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from stripes.site import build_site

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
OPTIONAL_END = {"p", "li", "td", "th", "tr", "thead", "tbody", "option"}  # may close implicitly (HTML spec)


class StrictPage(HTMLParser):
    """Collects problems (unbalanced or misnested tags, duplicate ids) and every linked URL."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.problems, self.links, self.ids, self.tags = [], [], [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if attrs.get(key):
                self.links.append(attrs[key])
        if "id" in attrs:
            if attrs["id"] in self.ids:
                self.problems.append(f"duplicate id {attrs['id']}")
            self.ids.add(attrs["id"])
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_endtag(self, tag):
        if tag in VOID:
            self.problems.append(f"end tag for void element {tag}")
            return
        while self.stack and self.stack[-1][0] != tag and self.stack[-1][0] in OPTIONAL_END:
            self.stack.pop()
        if not self.stack or self.stack[-1][0] != tag:
            self.problems.append(f"unexpected </{tag}> at {self.getpos()}, open: {[t for t, _ in self.stack[-3:]]}")
            return
        self.stack.pop()

    def check(self, text):
        self.feed(text)
        self.close()
        if not text.lstrip().lower().startswith("<!doctype html>"):
            self.problems.append("no <!DOCTYPE html>")
        self.problems += [f"unclosed <{t}> from line {pos[0]}" for t, pos in self.stack if t not in OPTIONAL_END]
        return self


def parse(page: Path) -> StrictPage:
    return StrictPage().check(page.read_text(encoding="utf-8"))


def test_the_checker_catches_broken_pages(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><div id="a"><span id="a"></div></body></html>')
    problems = parse(bad).problems
    assert any("duplicate id" in p for p in problems) and any("unexpected </div>" in p for p in problems)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """An outputs folder as the stages leave it: tables, figures, samples (2 methods, 2 windows)."""
    from stripes.eval.samples import write_samples
    from tests.fixtures.samples import write_kept_windows

    out = tmp_path_factory.mktemp("outputs")
    (out / "tables").mkdir()
    (out / "tables" / "table_III.md").write_text(
        "**Table III**\n\n| Context | Method | CS ↑ 16/16 |\n|---|---|---:|\n"
        "| BIN | RoPEPool | **44.60 ± 2.20** \\* |\n| BIN | RoPE(C) | 38.20 ± 4.20 |\n")
    (out / "tables" / "claims.md").write_text("- RoPEPool beats RoPE(C) on BIN: **holds**\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "figures").mkdir()
    for name in ("fig3_toy_scores", "fig4_metrics_vs_mi", "bars_bin"):
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, 1])
        fig.savefig(out / "figures" / f"{name}.png")
        plt.close(fig)
    for name in ("ropepool", "rope_c"):
        write_kept_windows(out / "runs" / name, splits=(("test16", 256),))
    store = pd.DataFrame([{"method": m, "context_label": "BIN", "lr": 0.001, "seed": 0,
                           "run_dir": str(out / "runs" / d)} for m, d in (("RoPEPool", "ropepool"), ("RoPE(C)", "rope_c"))])
    selection = pd.DataFrame([{"method": m, "context_label": "BIN", "lr": 0.001, "binarization": "threshold"}
                              for m in ("RoPEPool", "RoPE(C)")])
    write_samples(store, selection, out / "samples", windows={"test16": 2})
    (out / "REPORT.md").write_text("# report\n")
    return out


@pytest.fixture(scope="module")
def page(outputs):
    return build_site(outputs, outputs / "site", outputs / "samples", max_windows=3)


def test_page_is_valid_and_self_contained(page):
    checked = parse(page)
    assert checked.problems == []
    assert checked.links, "the page links nothing"
    for link in checked.links:
        assert not link.startswith(("http:", "https:", "//", "/")), f"not self-contained: {link}"
        if not link.startswith("#"):
            assert (page.parent / link).is_file(), f"{link} is referenced but missing"
    # the page only links files beside it, so the folder can be moved
    moved = page.parent.parent / "moved_site"
    shutil.copytree(page.parent, moved)
    assert all((moved / link).is_file() for link in checked.links if not link.startswith("#"))


def test_page_shows_tables_figures_and_the_sample_grid(page):
    text = page.read_text()
    checked = parse(page)
    # sample grid: BIN, 2 windows x (ground truth + 2 methods), each with pianoroll, audio and MIDI
    assert checked.tags.count("audio") == 6
    assert sum(link.endswith(".mid") for link in checked.links) == 6
    for name in ("Ground truth", "RoPEPool", "RoPE(C)", "song 003", "song 005"):
        assert name in text
    # Table III converted from Markdown with its bold best cell and star
    assert "<strong>44.60 ± 2.20</strong> *" in text and "<table>" in text
    assert "fig3_toy_scores.png" in text and "fig4_metrics_vs_mi.png" in text and "bars_bin.png" in text
    # what is missing is named, not silently dropped
    assert "table_I.md is missing" in text and "table_II.md is missing" in text


def test_a_rebuild_drops_stale_files(outputs, page):
    stale = page.parent / "files" / "samples" / "old.ogg"
    stale.write_bytes(b"x")
    build_site(outputs, outputs / "site", outputs / "samples")
    assert not stale.exists()


def test_empty_outputs_still_give_a_page(tmp_path):
    page = build_site(tmp_path, tmp_path / "site", tmp_path / "samples")
    checked = parse(page)
    assert checked.problems == [] and "No samples" in page.read_text()


def chromium():
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


@pytest.mark.skipif(chromium() is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_headless_chromium_renders_tables_and_players(page, tmp_path):
    """Chromium opens the page from the file system: its DOM has the tables, players and images,
    every image decodes, and the screenshot is not blank."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    url = page.resolve().as_uri()
    shot = tmp_path / "page.png"
    done = subprocess.run([chromium(), *flags, f"--screenshot={shot}", "--window-size=1400,1800", url],
                          capture_output=True, text=True, timeout=120)
    assert shot.exists(), done.stderr[-2000:]
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (1800, 1400)
    assert image.std() > 10 and (image < 100).mean() > 0.005, "the screenshot is blank"
    dom = subprocess.run([chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<audio") == 6 and dom.count("<table") >= 2 and dom.count("<img") >= 9
