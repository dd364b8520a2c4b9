"""What `sae-interp compare` says: the pull-request summary (a markdown table, one row per
metric, and the verdict) and the one-line verdict the CLI prints on stderr."""

from __future__ import annotations

import math

from sae_interp_tasks.reports.compare import RunComparison
from sae_interp_tasks.reports.results_io import percent


def _num(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.4g}"


def verdict_line(report: RunComparison) -> str:
    pct = percent(report.confidence)
    skipped = [r for r in report.rows if not r.gated]
    aside = (
        f"; not gated: {'; '.join(f'{r.name} ({r.not_gated})' for r in skipped)}" if skipped else ""
    )
    if report.failed:
        worst = "; ".join(
            f"{r.name} {_signed(r.difference)} [{_signed(r.lo)}, {_signed(r.hi)}] "
            f"({'paired' if r.paired else 'unpaired'}, n={r.n_baseline}/{r.n_candidate})"
            for r in report.failed
        )
        return (
            f"FAIL: candidate worse than baseline by more than {report.max_drop:g} at {pct} "
            f"confidence: {worst}{aside}"
        )
    if not report.gated:
        return f"NOTHING GATED: no metric here can tell the two SAEs apart{aside}"
    smallest = ", ".join(f"{r.name} {r.detectable_drop:.3g}" for r in report.gated)
    return (
        f"PASS: no gated metric ({len(report.gated)}) worse by more than {report.max_drop:g} "
        f"at {pct} confidence (smallest detectable drop: {smallest}){aside}"
    )


def _signed(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:+.4g}"


def markdown(report: RunComparison) -> str:
    pct = percent(report.confidence)
    status = {0: "PASS", 1: "FAIL", 2: "NOTHING GATED"}[report.exit_code]
    lines = [
        f"### sae-interp compare: {status}",
        "",
        f"- baseline: `{report.baseline.label}` "
        f"({report.baseline.fingerprint or 'no fingerprint'})",
        f"- candidate: `{report.candidate.label}` "
        f"({report.candidate.fingerprint or 'no fingerprint'})",
        f"- gate: fail when the {pct} bootstrap interval of candidate - baseline lies entirely "
        "beyond a drop of "
        f"{report.max_drop:g} ({report.resamples} resamples, percentile interval)",
        "",
        f"| metric | better | baseline | candidate | difference [{pct} CI] | smallest detectable "
        "drop | test | verdict |",
        "|---|:-:|---:|---:|---:|---:|---|---|",
    ]
    for r in report.rows:
        verdict = f"not gated: {r.not_gated}" if not r.gated else "**worse**" if r.worse else "ok"
        lines.append(
            f"| {r.name} | {'higher' if r.higher_is_better else 'lower'} | {_num(r.baseline)} | "
            f"{_num(r.candidate)} | {_signed(r.difference)} [{_signed(r.lo)}, {_signed(r.hi)}] | "
            f"{_num(r.detectable_drop)} | {r.how} | {verdict} |"
        )
    lines += ["", verdict_line(report)]
    return "\n".join(lines) + "\n"
