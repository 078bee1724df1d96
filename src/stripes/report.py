"""`outputs/REPORT.md`: one page that links every artefact of a reproduction.

The report only assembles what the stages wrote (tables as Markdown, the claims check, figures,
samples, benchmarks); it computes no number itself, so it can never disagree with them.
"""

from __future__ import annotations

from pathlib import Path

# (heading, Markdown file relative to outputs/): embedded when present, named as missing otherwise.
SECTIONS = [
    ("Table I: mutual information between pitch and context", "tables/table_I.md"),
    ("Table II: RoPE variants per context", "tables/table_II.md"),
    ("Table III: best RoPE vs F-StrIPE1 vs RoPEPool", "tables/table_III.md"),
    ("F-StrIPE paper, Table I rows: NoPE, SPE, F-StrIPE", "tables/table_fstripe.md"),
    ("REP vs REP-causal: does REP's gain survive without future leakage?", "tables/table_rep_causal.md"),
    ("Our numbers beside the paper's", "tables/comparison.md"),
    ("Which of the paper's claims hold", "tables/claims.md"),
    ("Attention benchmark", "bench/attention.md"),
    ("Training throughput benchmark", "bench/training.md"),
]



def _stage_table(record: dict) -> list[str]:
    lines = ["| stage | status | wall time | log |", "|---|---|---:|---|"]
    for stage in record["stages"]:
        minutes = stage["seconds"] / 60
        log = Path(stage["log"]).name if stage["log"] else ""
        lines.append(f"| {stage['name']} | {stage['status']} | {minutes:.1f} min | "
                     f"[{log}](reproduce/{log}) |")
    return lines


def write_report(outputs: Path, record: dict) -> Path:
    """Write `<outputs>/REPORT.md` from the stage record and the artefacts on disk; return its path."""
    outputs = Path(outputs)
    lines = [
        "# stripes: reproduction report",
        "",
        f"- Profile: `{record['profile']}`",
        f"- Machine: {record['machine']}",
        f"- Started: {record['started']}; total wall time {record['total_seconds'] / 60:.1f} min",
        "",
        "## Stages",
        "",
        *_stage_table(record),
        "",
    ]
    for heading, rel in SECTIONS:
        path = outputs / rel
        lines += [f"## {heading}", ""]
        if path.exists():
            lines += [f"Source: [{rel}]({rel})", "", path.read_text().strip(), ""]
        else:
            lines += [f"_Not produced in this run ({rel} is missing; see the stage logs)._", ""]
    figures = sorted(outputs.glob("figures/**/*.png"))
    lines += ["## Figures", ""]
    lines += [f"![{p.stem}]({p.relative_to(outputs)})" for p in figures] or ["_None._"]
    samples = sorted(outputs.glob("samples/**/*.mid"))
    lines += ["", "## MIDI samples", ""]
    lines += [f"- [{p.relative_to(outputs)}]({p.relative_to(outputs)})" for p in samples] or ["_None._"]
    report = outputs / "REPORT.md"
    report.write_text("\n".join(lines) + "\n")
    return report
