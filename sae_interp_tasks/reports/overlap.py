"""`sae-interp overlap`: the dictionaries' overlap over a set of similarity runs, as a matrix
(SAE x reference: layers, widths, seeds), a markdown table and a heatmap.

A cell is one run's dictionary-wide number (default `dict_matched_frac`, the fraction of the SAE's
latents matched one-to-one to a reference latent above the match threshold) with its chance level
beside it where the task reports one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sae_interp_tasks.errors import SaeInterpError, unknown
from sae_interp_tasks.reports.results_io import Run

# a task reporting this dictionary-wide metric compares dictionaries (whatever its name); the
# chance level of each metric is the one its recorded report names
MARKER = "dict_mean_mcs"


@dataclass(frozen=True)
class Overlap:
    metric: str
    saes: list[str]
    references: list[str]
    cells: dict[tuple[str, str], tuple[float, float | None]]  # (sae, ref) -> (value, chance)


def overlap(runs: list[Run], metric: str = "dict_matched_frac") -> Overlap:
    cells: dict = {}
    known: set[str] = set()
    for run in runs:
        for task in run.tasks.values():
            if MARKER not in task.metrics:
                continue
            known |= set(task.metrics)
            if metric not in task.metrics:
                continue
            ref_setting = task.settings.get("reference")
            ref = _column(ref_setting, run.references.get(ref_setting, {}).get("label"))
            chance = task.chance_of(metric)
            cells[(run.sae, ref or str(ref_setting))] = (
                task.metrics[metric].value,
                task.metrics[chance].value if chance else None,
            )
    if not cells:
        if known and metric not in known:
            valid = sorted(m for m in known if m.startswith("dict"))
            raise unknown(
                "overlap metric", metric, valid, fix=f"pass --metric one of {', '.join(valid)}"
            )
        raise SaeInterpError(
            "none of the files given holds dictionary-similarity results (a task reporting "
            f'{MARKER}); run the similarity task with --metadata \'{{"reference": "path=DIR"}}\' '
            "first (README, 'Reading SAEs through their weights')"
        )
    saes = sorted({s for s, _ in cells})
    refs = sorted({r for _, r in cells})
    return Overlap(metric, saes, refs, cells)


def _column(setting: str | None, label: str | None) -> str | None:
    """A reference's column: its label; one column for each control kind whatever SAE it was
    drawn for ("control=random"), and "itself" where there was no reference."""
    if not setting:
        return "itself"
    if str(setting).startswith("control="):
        return str(setting).split(",")[0]
    return label


def overlap_if_any(runs: list[Run], metric: str = "dict_matched_frac") -> Overlap | None:
    """The matrix of the similarity runs among `runs`, or None where there are none (the
    leaderboard's HTML page draws it when there is one)."""
    has = any(MARKER in task.metrics for run in runs for task in run.tasks.values())
    return overlap(runs, metric) if has else None


def html_section(o: Overlap, image: str) -> str:
    """The matrix as the leaderboard page shows it: a table with chance levels, then `image` (the
    heatmap's embedded img tag)."""
    import html

    e = html.escape
    head = "".join(f"<th class='num'>{e(r)}</th>" for r in o.references)
    rows = "".join(
        f"<tr><td class='text'>{e(sae)}</td>"
        + "".join(f"<td class='num'>{e(_fmt(o.cells.get((sae, r))))}</td>" for r in o.references)
        + "</tr>"
        for sae in o.saes
    )
    return (
        "<section id='overlap'><h2>Overlap of dictionaries</h2>"
        f"<p class='note'>{e(o.metric)} of each SAE (row) against each reference (column), "
        "from the dictionary-similarity runs; chance from a random dictionary of the "
        "reference's shape.</p>"
        f"<table class='board'><thead><tr><th class='text'>SAE</th>{head}</tr></thead>"
        f"<tbody>{rows}</tbody></table>{image}</section>"
    )


def _fmt(cell) -> str:
    if cell is None:
        return ""
    value, chance = cell
    # NaN: the metric does not apply (a dictionary against itself is not matched)
    if math.isnan(value):
        return "—"
    return f"{value:.3f}" + (f" (chance {chance:.3f})" if chance is not None else "")


def markdown(o: Overlap) -> str:
    lines = [
        f"Overlap: `{o.metric}` of each SAE (row) against each reference (column)",
        "",
        "| SAE | " + " | ".join(o.references) + " |",
        "|---|" + "---:|" * len(o.references),
    ]
    for sae in o.saes:
        row = [_fmt(o.cells.get((sae, ref))) for ref in o.references]
        lines.append(f"| {sae} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def heatmap(o: Overlap) -> bytes:
    """The matrix as a PNG heatmap (matplotlib's Agg canvas), empty cells blank."""
    import io

    import numpy as np
    from matplotlib.figure import Figure

    values = np.full((len(o.saes), len(o.references)), np.nan)
    for (sae, ref), (value, _) in o.cells.items():
        values[o.saes.index(sae), o.references.index(ref)] = value
    fig = Figure(
        figsize=(3.0 + 1.2 * len(o.references), 2.4 + 0.5 * len(o.saes)),
        dpi=100,
        layout="constrained",
    )
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(
        range(len(o.references)),
        [_short(r) for r in o.references],
        rotation=30,
        ha="right",
        rotation_mode="anchor",
    )
    ax.set_yticks(range(len(o.saes)), [_short(s) for s in o.saes])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            if not math.isnan(values[i, j]):
                shade = "k" if values[i, j] > 0.6 else "w"  # legible on viridis' light end
                ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", color=shade)
    ax.set_xlabel("reference")
    ax.set_title(o.metric)
    fig.colorbar(image, ax=ax)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _short(label: str) -> str:
    return label if len(label) <= 28 else "..." + label[-25:]
