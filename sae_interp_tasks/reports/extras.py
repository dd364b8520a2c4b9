"""What a leaderboard shows beyond its table, where its runs hold it: the methods side by side
(rank correlations of latent tasks' per-latent scores, reports/agreement.py) and the overlap matrix
of similarity runs (reports/overlap.py): as markdown, as HTML sections, and their images."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports import agreement, overlap
from sae_interp_tasks.reports.html import img_tag
from sae_interp_tasks.reports.results_io import Run


@dataclass
class Extras:
    markdown: str = ""
    html: str = ""
    images: dict = field(default_factory=dict)  # file name -> PNG bytes


def _agreement_html(pairs: list, confidence: float, images: dict) -> str:
    e = html.escape
    rows = "".join(
        f"<tr><td class='text'>{e(p.sae)}</td><td class='text'>{e(p.a)}</td>"
        f"<td class='text'>{e(p.b)}</td><td class='num'>{p.n}</td>"
        f"<td class='num'>{p.rho:.3f} [{p.low:.3f}, {p.high:.3f}]{' †' if p.unchecked else ''}"
        "</td></tr>"
        for p in pairs
    )
    return (
        "<section id='methods'><h2>Methods side by side</h2>"
        f"<p class='note'>Spearman rank correlation of two tasks' per-latent scores over the "
        f"latents both scored [{confidence:.0%} bootstrap interval over latents]; † a scorer "
        "behind one side failed its known-answer check.</p>"
        "<table class='board'><thead><tr><th class='text'>SAE</th><th class='text'>method A</th>"
        "<th class='text'>method B</th><th class='num'>latents</th><th class='num'>ρ</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
        + "".join(img_tag(n, png) for n, png in images.items())
        + "</section>"
    )


def extras(runs: list[Run], confidence: float, scatter: str | None = None) -> Extras:
    out = Extras()
    pairs = agreement.method_pairs(runs, confidence)
    if pairs:
        out.markdown += agreement.markdown(pairs, confidence)
        shown = {}
        for i, sae in enumerate(dict.fromkeys(p.sae for p in pairs)):
            shown[f"methods_{i}.png"] = agreement.heatmap(pairs, sae)
        if scatter:
            first, _, second = scatter.partition(",")
            png = agreement.scatter(runs, first.strip(), second.strip())
            if not png:
                raise SaeInterpError(
                    f"--scatter {scatter}: no SAE has per-latent scores of both tasks; name two "
                    f"of {', '.join(sorted({t for r in runs for t in r.tasks}))}"
                )
            shown["methods_scatter.png"] = png
        out.html += _agreement_html(pairs, confidence, shown)
        out.images.update(shown)
    matrix = overlap.overlap_if_any(runs)
    if matrix is not None:
        png = overlap.heatmap(matrix)
        out.html += overlap.html_section(matrix, img_tag("overlap", png))
        out.images["overlap.png"] = png
    return out
