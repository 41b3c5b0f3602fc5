"""The eval report: one row per (run, sampler, steps, w) as CSV, JSON and Markdown, and the plots.

    report.csv / report.json / report.md   the table (report.json also holds the command's settings)
                       with --repeats R: a row per seed in the CSV and JSON, and their mean and
                       (sample) standard deviation per (run, sampler, steps, w) in report.md and
                       report.json's "summary"
    fd_vs_w.png        Fréchet distance against w, one line per (model, steps, sampler)
    fd_is_tradeoff.png Fréchet distance against IS across w: the paper's trade-off figure
    fd_vs_calls.png    Fréchet distance against network calls per image, teacher and students
    grids/ROW.png      samples of each row
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
from rich.table import Table

# Fréchet-distance columns and their names in plots: Inception FID, else a shipped classifier's
FD_LABELS = {"fid": "FID", "digits_fd": "digits-FD", "fashion_fd": "fashion-FD"}
IS_COLUMNS = ("is", "digits_is")
SETTING_COLUMNS = ("run", "model", "sampler", "steps", "w", "calls_per_image", "seconds_per_image", "n", "seed",
                   "repeats")
GROUP_COLUMNS = ("run", "model", "sampler", "steps", "w")  # what a row of the table is; its seeds are repeats


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"
    return str(value)


STD = "_std"


def summarize_repeats(rows: list[dict]) -> list[dict]:
    """The rows of a --repeats eval folded into one per (run, model, sampler, steps, w): every
    metric's mean over the seeds and its sample standard deviation (column + "_std"; None from one
    seed), the seconds per image averaged, and `repeats`, the number of seeds. A metric missing
    (None) in some seed is averaged over the others; missing in all, it stays None."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[c] for c in GROUP_COLUMNS), []).append(r)
    summary = []
    for group in groups.values():
        first = group[0]
        row = {c: first[c] for c in GROUP_COLUMNS}
        row.update(calls_per_image=first["calls_per_image"], n=first["n"], repeats=len(group),
                   seconds_per_image=float(np.mean([r["seconds_per_image"] for r in group])))
        for c in first:
            if c in SETTING_COLUMNS:
                continue
            values = [r[c] for r in group if isinstance(r[c], (int, float)) and math.isfinite(r[c])]
            row[c] = float(np.mean(values)) if values else None
            row[c + STD] = float(np.std(values, ddof=1)) if len(values) > 1 else None
        summary.append(row)
    return summary


def _cell(row: dict, column: str) -> str:
    """A value as a table shows it; with a summary's standard deviation beside it: mean ± std."""
    std = row.get(column + STD)
    return f"{_fmt(row[column])} ± {_fmt(std)}" if std is not None else _fmt(row[column])


def _shown_columns(rows: list[dict]) -> list[str]:
    """A table's columns: a summary's std columns go into their metric's cell."""
    return [c for c in (list(rows[0]) if rows else list(SETTING_COLUMNS))
            if not (c.endswith(STD) and c[:-len(STD)] in rows[0])]


def write_tables(rows: list[dict], folder: Path, settings: dict, summary: list[dict] | None = None) -> None:
    """The report's files; with `summary` (summarize_repeats of a --repeats eval) report.md shows it and
    report.json holds it. settings["seeds"]: the (row seed, teacher reference seed) of each repeat."""
    columns = list(rows[0]) if rows else list(SETTING_COLUMNS)
    with open(folder / "report.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    report = {"settings": settings, "rows": rows} | ({"summary": summary} if summary is not None else {})
    (folder / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    row_seeds, reference_seeds = zip(*settings["seeds"])
    if len(row_seeds) > 1:
        seeds = (f"mean ± standard deviation over {len(row_seeds)} seeds ({', '.join(map(str, row_seeds))}; "
                 "one row per seed in report.csv and report.json)")
        teacher_seeds = "seeds " + ", ".join(map(str, reference_seeds))
    else:
        seeds, teacher_seeds = f"seed {row_seeds[0]}", f"seed {reference_seeds[0]}"
    lines = [f"# gdistill eval: {settings.get('command', '')}", "",
             f"Reference: {settings.get('ref')}; {settings.get('n')} samples a row, {seeds}, "
             f"device {settings.get('device')}." + (
                 f" Columns *_to_teacher: the same measure (distance, or precision and recall) against the guided teacher's samples at the same w "
                 f"({settings['to_teacher_steps']} steps, {teacher_seeds})."
                 if settings.get("to_teacher_steps") else ""), ""]
    lines += [f"{column}: n/a in every row: {why}.  " for column, why in (settings.get("unavailable") or {}).items()]
    shown = summary or rows
    columns = _shown_columns(shown)
    lines += ["",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r, c) for c in columns) + " |" for r in shown]
    (folder / "report.md").write_text("\n".join(lines) + "\n")


SHORT_HEADERS = {"calls_per_image": "calls", "seconds_per_image": "ms/img", "class_accuracy": "accuracy"}


def rich_table(rows: list[dict], title: str) -> Table:
    """The table for the terminal: the files' columns less those that are the same in every row
    (n, seed; run and sampler when there is one), seconds shown as milliseconds; a summary's
    metrics as mean ± std."""
    columns = [c for c in _shown_columns(rows)
               if c not in ("n", "seed") and not (c in ("run", "sampler") and len({r[c] for r in rows}) == 1)]
    table = Table(title=title)
    for c in columns:
        table.add_column(SHORT_HEADERS.get(c, c), justify="left" if c in ("run", "model", "sampler") else "right")
    for r in rows:
        table.add_row(*(_fmt(r[c] * 1000) if c == "seconds_per_image" else _cell(r, c) for c in columns))
    return table


def _series(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped into lines: one per (run, model, sampler, steps), in w order."""
    runs_of_model: dict[str, set[str]] = {}
    for r in rows:
        runs_of_model.setdefault(r["model"], set()).add(r["run"])
    groups: dict[str, list[dict]] = {}
    for r in rows:
        name = f"{r['model']} {r['steps']} steps" + (" (stochastic)" if r["sampler"] == "stochastic" else "")
        if len(runs_of_model[r["model"]]) > 1:  # the same kind from several runs: name the run too
            name = f"{r['run']}: {name}"
        groups.setdefault(name, []).append(r)
    return {k: sorted(v, key=lambda r: r["w"]) for k, v in groups.items()}


def _valid(rows, *columns):
    return [r for r in rows if all(isinstance(r.get(c), (int, float)) and math.isfinite(r[c]) for c in columns)]


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:  # nothing to name when every value is missing
        ax.legend(fontsize=7)


def write_plots(rows: list[dict], folder: Path) -> list[Path]:
    """The PNG charts the table supports (none without a Fréchet-distance column)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fd = next((c for c in FD_LABELS if rows and c in rows[0]), None)
    isc = next((c for c in IS_COLUMNS if rows and c in rows[0]), None)
    if fd is None:
        return []
    label = FD_LABELS[fd]
    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(folder / name, dpi=120)
        plt.close(fig)
        written.append(folder / name)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, group in _series(rows).items():
        group = _valid(group, fd)
        ax.plot([r["w"] for r in group], [r[fd] for r in group], marker="o", label=name)
    ax.set(xlabel="guidance strength w", ylabel=f"{label} (lower is better)", title=f"{label} against w")
    _legend(ax)
    save(fig, "fd_vs_w.png")

    if isc is not None:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name, group in _series(rows).items():
            group = _valid(group, fd, isc)
            ax.plot([r[isc] for r in group], [r[fd] for r in group], marker="o", label=name)
            for r in group:
                ax.annotate(f"w={r['w']:g}", (r[isc], r[fd]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        is_label = "IS" if isc == "is" else "digits-IS"
        ax.set(xlabel=f"{is_label} (higher is better)", ylabel=f"{label} (lower is better)",
               title=f"{label} / {is_label} trade-off across w")
        _legend(ax)
        save(fig, "fd_is_tradeoff.png")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, w in enumerate(sorted({r["w"] for r in rows})):
        for teacher, marker, style in ((True, "o", "-"), (False, "^", "--")):
            group = sorted(_valid([r for r in rows if r["w"] == w and (r["model"] == "teacher") == teacher
                                   and r["sampler"] == "deterministic"], fd), key=lambda r: r["calls_per_image"])
            if group:
                ax.plot([r["calls_per_image"] for r in group], [r[fd] for r in group], marker=marker, linestyle=style,
                        color=f"C{k % 10}", label=f"{'teacher (guided DDIM)' if teacher else 'students'}, w={w:g}")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="network calls per image", ylabel=f"{label} (lower is better)", title=f"{label} against sampling cost")
    _legend(ax)
    save(fig, "fd_vs_calls.png")
    return written
