"""`python -m stripes.site` (`make site`): the demo page ``outputs/site/index.html``.

One self-contained page, like the authors' demo: no CDN, no script, no network; every file it uses
is copied beside it (``outputs/site/files/...``, hard links where possible), so the folder opens from
the file system or can be zipped and moved. It shows, from what the other stages wrote:

* a sample grid per context and split (rows = windows, columns = ground truth and each method; each
  cell a pianoroll, an audio player and the MIDI file), from ``samples/index.csv``
  (:mod:`stripes.eval.samples`);
* the harmonize demo: the input melody (audio), the estimated key and chords, the output pianoroll,
  audio and MIDI (:func:`stripes.harmonize.harmonize` on ``demo.input``);
* Tables I–III, the F-StrIPE rows, our numbers beside the paper's with the marks, the claims check
  and the benchmarks: the Markdown files that :mod:`stripes.report` embeds
  (:data:`stripes.report.SECTIONS`), converted with Python-Markdown;
* Figs. 3 and 4 and the per-context bar charts.

A missing artefact is named on the page (and the page is still written); nothing is computed here.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from stripes.report import SECTIONS

FIGURES = [  # (caption, path relative to the outputs folder)
    ("Fig. 3: toy study, scores of content against context (make toy)", "figures/fig3_toy_scores.png"),
    ("Fig. 4: in-domain performance against the MI of each context", "figures/fig4_metrics_vs_mi.png"),
]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 6px; vertical-align: top; }
th { background: #f2f2f2; }
caption { text-align: left; font-weight: bold; padding: 4px 0; }
table.grid td { text-align: center; }
table.grid img { width: 300px; display: block; margin: 0 auto 4px; }
audio { width: 290px; height: 32px; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } figure img { max-width: 720px; }
.missing { color: #a00; font-style: italic; } .note { color: #555; font-size: 0.9em; }
"""


class Site:
    """The page's folder: :meth:`use` puts a file under ``files/`` and returns its relative link."""

    def __init__(self, out_dir: Path, outputs: Path):
        self.out_dir, self.outputs = Path(out_dir), Path(outputs)
        self.files_dir = self.out_dir / "files"

    def use(self, path: str | Path) -> str | None:
        """Relative link to a copy of ``path`` beside the page; None when the file does not exist.

        Files below the outputs folder keep their relative path (``files/samples/BIN/...``); others
        go to ``files/other/<name>``."""
        path = Path(path)
        if not path.is_file():
            return None
        try:
            rel = path.resolve().relative_to(self.outputs.resolve())
        except ValueError:
            rel = Path("other") / path.name
        target = self.files_dir / rel
        if target.resolve() != path.resolve():
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                target.unlink()
            try:
                os.link(path, target)
            except OSError:  # another file system, or links not allowed
                shutil.copy2(path, target)
        return target.relative_to(self.out_dir).as_posix()

    def link(self, path: str | Path) -> str:
        """Relative link to a file already inside the site folder."""
        return Path(path).resolve().relative_to(self.out_dir.resolve()).as_posix()


def esc(text) -> str:
    return html.escape(str(text), quote=True)


def media_cell(site: Site, row) -> str:
    """Pianoroll, audio player and MIDI link of one sample (a row of the sample index)."""
    png, audio, midi = site.use(row.png), site.use(row.audio), site.use(row.midi)
    parts = []
    if png:
        parts.append(f'<img src="{esc(png)}" alt="pianoroll: {esc(row.method)}" loading="lazy">')
    if audio:
        parts.append(f'<audio controls preload="none" src="{esc(audio)}"></audio>')
    if midi:
        parts.append(f'<a href="{esc(midi)}">MIDI</a>')
    return "<td>" + ("<br>".join(parts) if parts else '<span class="missing">missing</span>') + "</td>"


def sample_grids(site: Site, index: pd.DataFrame, max_windows: int) -> list[str]:
    """One table per context and split: rows = windows, columns = ground truth then each method."""
    from stripes.eval.cells import CONTEXTS
    from stripes.eval.samples import GROUND_TRUTH

    if index.empty:
        return ['<p class="missing">No samples (samples/index.csv is missing or empty: run '
                "<code>make evaluate plots</code>).</p>"]
    out = []
    contexts = sorted(set(index["context"]), key=lambda c: (CONTEXTS.index(c) if c in CONTEXTS else 99, c))
    for context in contexts:
        block = index[index["context"] == context]
        out.append(f'<h3 id="samples-{esc(context.lower())}">{esc(context)}</h3>')
        for split in sorted(set(block["split"])):
            rows = block[block["split"] == split]
            methods = sorted(set(rows["method"]), key=lambda m: (m != GROUND_TRUTH, m))
            windows = rows[["song", "start", "bars"]].drop_duplicates().head(max_windows)
            out.append(f'<table class="grid"><caption>{esc(context)}, {esc(split)} windows</caption>')
            out.append("<tr><th>window</th>" + "".join(f"<th>{esc(m)}</th>" for m in methods) + "</tr>")
            for w in windows.itertuples():
                cells = rows[(rows["song"] == w.song) & (rows["start"] == w.start)]
                by_method = {r.method: r for r in cells.itertuples()}
                line = f"<tr><th>song {int(w.song):03d}<br>tick {int(w.start)}<br>{int(w.bars)} bars</th>"
                line += "".join(media_cell(site, by_method[m]) if m in by_method else "<td></td>"
                                for m in methods)
                out.append(line + "</tr>")
            out.append("</table>")
    return out


def markdown_sections(site: Site) -> list[str]:
    """The report's Markdown artefacts (tables, comparison, claims, benchmarks) as HTML."""
    import markdown

    out = []
    for heading, rel in SECTIONS:
        path = site.outputs / rel
        anchor = Path(rel).stem.lower().replace("_", "-")
        out.append(f'<h2 id="{esc(anchor)}">{esc(heading)}</h2>')
        if path.exists():
            out.append(markdown.markdown(path.read_text(encoding="utf-8"), extensions=["tables"],
                                         output_format="html"))
            out.append(f'<p class="note">Source: <a href="{esc(site.use(path))}">{esc(rel)}</a></p>')
        else:
            out.append(f'<p class="missing">Not produced ({esc(rel)} is missing).</p>')
    return out


def figures(site: Site) -> list[str]:
    """Figs. 3 and 4, then every per-context bar chart."""
    out = ['<h2 id="figures">Figures</h2>']
    bars = [(f"Test metrics per method: {p.stem.split('_', 1)[1].upper()}",
             p.relative_to(site.outputs).as_posix())
            for p in sorted((site.outputs / "figures").glob("bars_*.png"))]
    for caption, rel in FIGURES + bars:
        link = site.use(site.outputs / rel)
        if link:
            out.append(f'<figure><img src="{esc(link)}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
                       "</figcaption></figure>")
        else:
            out.append(f'<p class="missing">{esc(caption)}: not produced ({esc(rel)} is missing).</p>')
    return out


def harmonize_demo(site: Site, demo_cfg) -> list[str]:
    """Harmonize ``demo_cfg.input`` with the demo run: its input, key, chords and output."""
    from stripes.data.chords import key_name
    from stripes.harmonize import HarmonizeError, harmonize
    from stripes.harmonize.cli import default_checkpoint

    out = ['<h2 id="harmonize">Harmonize a melody</h2>']
    if not demo_cfg.get("enabled", False):
        return out + ['<p class="note">Not built (demo.enabled=false).</p>']
    source = Path(demo_cfg.input)
    if not source.is_absolute() and not source.exists():  # run from another folder: the shipped example
        source = Path(__file__).resolve().parents[2] / source
    run_dir = Path(demo_cfg.checkpoint) if demo_cfg.get("checkpoint") else default_checkpoint()
    if run_dir is None:
        return out + ['<p class="missing">No finished run to harmonize with (outputs/runs is empty).</p>']
    demo_dir = site.files_dir / "demo"
    try:
        summary = harmonize(source, Path(run_dir), demo_dir / "harmonized.mid",
                            data_root=demo_cfg.get("data_root"), say=lambda line: print(f"[site] {line}"))
    except HarmonizeError as err:
        print(f"[site] harmonize demo failed: {err}", flush=True)
        return out + [f'<p class="missing">The harmonize demo failed: {esc(err)}</p>']
    shown = 48
    chords = " · ".join(f"{row['bar']}:{row['beat']:g} {row['chord']}" for row in summary["chords"][:shown])
    chords += " …" if len(summary["chords"]) > shown else ""
    return out + [
        f"<p><code>python -m stripes.harmonize {esc(source)} --checkpoint {esc(run_dir)} "
        "--out harmonized.mid</code></p>",
        "<table><tr><th>input melody</th><th>estimated key</th>"
        "<th>estimated chords (bar:beat chord, changes only)</th></tr>",
        f'<tr><td><audio controls preload="none" src="{esc(site.link(summary["melody_audio"]))}"></audio><br>'
        f'<a href="{esc(site.use(source))}">{esc(source.name)}</a></td>'
        f"<td>{esc(key_name(*summary['key']))}</td><td>{esc(chords)}</td></tr></table>",
        f'<figure><img src="{esc(site.link(summary["png"]))}" alt="harmonized pianoroll"><figcaption>'
        f"{esc(Path(run_dir).name)}, context {esc(summary['context'].upper())}: {summary['piano_notes']} "
        "piano notes (melody red, accompaniment blue)</figcaption></figure>",
        f'<p><audio controls preload="none" src="{esc(site.link(summary["audio"]))}"></audio> '
        f'<a href="{esc(site.link(summary["out"]))}">harmonized.mid</a></p>',
    ]


def header(site: Site) -> list[str]:
    """Title, where the numbers come from (profile, machine) and the section links."""
    facts = []
    record_path = site.outputs / "reproduce" / "stages.json"
    if record_path.exists():
        record = json.loads(record_path.read_text())
        facts.append(f"last <code>make reproduce</code>: profile <code>{esc(record.get('profile'))}</code>, "
                     f"{esc(record.get('machine', ''))}, started {esc(record.get('started', ''))}")
    report = site.use(site.outputs / "REPORT.md")
    if report:
        facts.append(f'full report: <a href="{esc(report)}">REPORT.md</a>')
    return [
        "<h1>Of All StrIPEs: a reproduction</h1>",
        '<p class="note">Structure-informed positional encoding for melody harmonization on POP909 '
        "(Agarwal, Wang, Richard, 2025), reproduced with <code>stripes</code>"
        + "".join(f"; {fact}" for fact in facts) + ".</p>",
        '<nav><a href="#samples">Listen</a><a href="#harmonize">Harmonize</a><a href="#table-i">Table I</a>'
        '<a href="#table-ii">Table II</a><a href="#table-iii">Table III</a><a href="#comparison">vs. paper</a>'
        '<a href="#claims">Claims</a><a href="#figures">Figures</a></nav>',
    ]


def build_site(outputs: str | Path, out_dir: str | Path, samples_dir: str | Path, max_windows: int = 3,
               demo_cfg=None) -> Path:
    """Write ``<out_dir>/index.html`` and its files (``<out_dir>/files/``); returns the page's path.

    ``files/`` is rebuilt from scratch so the page never links a stale file of an earlier build.
    ``demo_cfg`` is the ``demo`` block of ``conf/site.yaml`` (None: no harmonize demo)."""
    from stripes.eval.samples import read_index

    out_dir = Path(out_dir)
    if (out_dir / "files").exists():
        shutil.rmtree(out_dir / "files")
    out_dir.mkdir(parents=True, exist_ok=True)
    site = Site(out_dir, Path(outputs))
    body = header(site)
    body += ['<h2 id="samples">Listen: samples per context</h2>',
             '<p class="note">The first test windows, the same for every method. Each method is its '
             "validation-selected model (learning rate, binarization; lowest seed). Melody red (flute), "
             "bridge light blue (strings), piano blue (piano); left to right in the stereo mix.</p>"]
    body += sample_grids(site, read_index(samples_dir), max_windows)
    body += harmonize_demo(site, demo_cfg if demo_cfg is not None else OmegaConf.create({"enabled": False}))
    body += markdown_sections(site)
    body += figures(site)
    page = ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            "<title>stripes: Of All StrIPEs reproduction</title>\n"
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")
    index = out_dir / "index.html"
    tmp = index.with_name(".index.html.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index


def run(cfg: DictConfig) -> Path:
    index = build_site(cfg.outputs_dir, cfg.out_dir, cfg.samples_dir, int(cfg.max_windows), cfg.demo)
    n_files = sum(1 for p in (index.parent / "files").rglob("*") if p.is_file())
    print(f"[site] wrote {index} ({n_files} files beside it); open it in a browser", flush=True)
    return index


if __name__ == "__main__":
    import hydra

    @hydra.main(version_base="1.3", config_path="../../conf", config_name="site")
    def _main(cfg: DictConfig) -> None:
        os.chdir(hydra.utils.get_original_cwd())
        run(cfg)

    _main()
