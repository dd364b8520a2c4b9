"""The `sae-interp` console script: `leaderboard` and `compare` over lm-eval results.

The only module here that prints. Exit codes: 0 done (compare: no gated metric worse),
1 compare's candidate is worse than the baseline, 2 unusable input (one `error:` line on
stderr, nothing written) or, for compare, nothing that could be gated. Output files are written
only once everything is computed, each atomically (a temporary file renamed into place).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)

FORMATS = ("markdown", "csv", "json", "html")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sae-interp",
        description="Leaderboards and CI gates over the results of "
        "lm_eval --model sae (see docs/leaderboard.md).",
    )
    top.add_argument(
        "-v", "--verbose", action="count", default=0, help="log what is read (-vv: debug)"
    )
    sub = top.add_subparsers(dest="command", required=True)
    add_leaderboard_parser(sub)
    add_export_parser(sub)
    add_compare_parser(sub)
    add_overlap_parser(sub)
    return top


def add_overlap_parser(sub) -> None:
    ov = sub.add_parser(
        "overlap", help="the dictionaries' overlap over similarity runs: SAE x reference"
    )
    ov.add_argument(
        "results", nargs="+", help="results_*.json files or lm_eval --output_path folders"
    )
    ov.add_argument(
        "--metric",
        default="dict_matched_frac",
        help="the dictionary-wide metric shown (default dict_matched_frac; also dict_mean_mcs, "
        "dict_frac_mcs_07, dict_frac_mcs_09)",
    )
    ov.add_argument("--output", "-o", help="write the markdown table here instead of stdout")
    ov.add_argument("--heatmap", metavar="PNG", help="also draw the matrix as a heatmap PNG")


def add_leaderboard_parser(sub) -> None:
    board = sub.add_parser(
        "leaderboard", help="one row per SAE, one column per task's headline metric"
    )
    board.add_argument(
        "results", nargs="+", help="results_*.json files or lm_eval --output_path folders"
    )
    board.add_argument("--format", choices=FORMATS, default="markdown", help="default: markdown")
    board.add_argument("--output", "-o", help="write the table here instead of stdout")
    board.add_argument("--plots", metavar="DIR", help="also write the plots as PNG files into DIR")
    board.add_argument(
        "--confidence", type=float, default=0.95, help="interval level (default 0.95)"
    )
    board.add_argument(
        "--scatter",
        metavar="TASK_A,TASK_B",
        help="also plot two tasks' per-latent scores against each other (HTML page, --plots)",
    )


def add_export_parser(sub) -> None:
    out = sub.add_parser(
        "export",
        help="write results in another tool's format (SAEBench's result files, delphi's run "
        "folder, Neuronpedia's explanation export)",
    )
    out.add_argument(
        "results", nargs="+", help="results_*.json files or lm_eval --output_path folders"
    )
    out.add_argument(
        "--format",
        choices=("saebench", "delphi", "neuronpedia"),
        default="saebench",
        help="default: saebench (delphi and neuronpedia need the runs' --log_samples files)",
    )
    out.add_argument(
        "--output",
        "-o",
        required=True,
        help="folder to write into (saebench: <eval_type_id>/<sae>_eval_results.json; delphi: "
        "<sae>/explanations, scores; neuronpedia: <model>/<source>/explanations, config)",
    )
    out.add_argument(
        "--neuronpedia-id",
        metavar="MODEL/SOURCE",
        help="neuronpedia: the SAE's Neuronpedia id, where sae_lens's metadata names none",
    )
    out.add_argument(
        "--author-id",
        default="sae-interp-tasks",
        help="neuronpedia: the user id the rows name as author (a user of the target instance)",
    )


def add_compare_parser(sub) -> None:
    cmp = sub.add_parser(
        "compare", help="candidate - baseline with bootstrap intervals; exit 1 when worse"
    )
    cmp.add_argument(
        "baseline", help="the baseline's results file or --output_path folder (with samples)"
    )
    cmp.add_argument(
        "candidate", help="the candidate's results file or --output_path folder (with samples)"
    )
    cmp.add_argument(
        "--metrics",
        help="comma-separated metrics to gate on, as task/metric or metric "
        "(default: the headline metric of each task)",
    )
    cmp.add_argument(
        "--max-drop",
        type=float,
        default=0.0,
        help="allowed drop in each gated metric's own units (default 0)",
    )
    cmp.add_argument(
        "--confidence", type=float, default=0.95, help="two-sided interval level (default 0.95)"
    )
    cmp.add_argument(
        "--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)"
    )
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    cmp.add_argument(
        "--markdown", metavar="FILE", help="write the pull-request summary here instead of stdout"
    )


def write_outputs(files: dict[Path, str | bytes]) -> None:
    """All output files or none (see caching.write_files); a file that cannot be written is a user
    error."""
    from sae_interp_tasks.caching import write_files

    try:
        write_files(files)
    except OSError as err:
        where = err.filename or next(iter(files), "")
        raise SaeInterpError(
            f"cannot write {where} ({err.strerror or type(err).__name__}); "
            "choose another --output/--plots/--markdown path"
        ) from err


def run_leaderboard(args) -> int:
    from sae_interp_tasks.reports import board, extras, html, inputs, plots, tables

    if args.output and Path(args.output).is_dir():
        raise SaeInterpError(f"--output {args.output} is a folder; give a file name")
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise SaeInterpError(f"--plots {args.plots} is a file; give a folder")
    runs = inputs.read_inputs(args.results)
    built = board.build_board(runs, confidence=args.confidence)
    images = plots.plots(built) if (args.plots or args.format == "html") else {}
    more = extras.extras(runs, args.confidence, args.scatter)
    if args.format == "html":
        text = html.html_page(built, images, more.html)
    else:
        text = tables.render(built, args.format)
        if args.format == "markdown" and more.markdown:
            text += "\n" + more.markdown
    images.update(more.images)
    files = {Path(args.plots) / name: png for name, png in images.items()} if args.plots else {}
    if args.output:
        files[Path(args.output)] = text
    write_outputs(files)
    if not args.output:
        sys.stdout.write(text)
    return 0


def run_compare(args) -> int:
    from sae_interp_tasks.reports import compare, compare_text, inputs

    if args.resamples < 100:
        raise SaeInterpError(
            f"--resamples {args.resamples} is too few for an interval; use 1000 or more"
        )
    base = inputs.read_inputs([args.baseline])
    cand = inputs.read_inputs([args.candidate])
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    report = compare.compare(
        base,
        cand,
        metrics=metrics,
        confidence=args.confidence,
        max_drop=args.max_drop,
        resamples=args.resamples,
        seed=args.seed,
    )
    summary = compare_text.markdown(report)
    if args.markdown:
        write_outputs({Path(args.markdown): summary})
    else:
        sys.stdout.write(summary)
    print(compare_text.verdict_line(report), file=sys.stderr)
    return report.exit_code


def run_export(args) -> int:
    from sae_interp_tasks.reports import inputs, interop, saebench

    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise SaeInterpError(f"--output {args.output} is a file; give a folder")
    if args.neuronpedia_id and args.format != "neuronpedia":
        raise SaeInterpError("--neuronpedia-id is for --format neuronpedia")
    runs = inputs.read_inputs(args.results)
    if args.format == "delphi":
        files = interop.delphi(runs)
    elif args.format == "neuronpedia":
        files = interop.neuronpedia(runs, args.neuronpedia_id, args.author_id)
    else:
        files = saebench.export(runs)
    write_outputs({Path(args.output) / name: content for name, content in files.items()})
    shown = sorted(files) if len(files) <= 20 else sorted({Path(*n.parts[:2]) for n in files})
    for name in shown:
        print(Path(args.output) / name)
    if len(files) > 20:
        print(f"{len(files)} files under {args.output}", file=sys.stderr)
    return 0


def run_overlap(args) -> int:
    from sae_interp_tasks.reports import overlap
    from sae_interp_tasks.reports.results_io import read_runs

    matrix = overlap.overlap(read_runs(args.results, load_samples=False), args.metric)
    outputs: dict = {}
    text = overlap.markdown(matrix)
    if args.output:
        outputs[Path(args.output)] = text
    if args.heatmap:
        outputs[Path(args.heatmap)] = overlap.heatmap(matrix)
    write_outputs(outputs)
    if not args.output:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    level = (
        logging.WARNING
        if args.verbose == 0
        else logging.INFO
        if args.verbose == 1
        else logging.DEBUG
    )
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        if args.command == "leaderboard":
            return run_leaderboard(args)
        if args.command == "export":
            return run_export(args)
        if args.command == "overlap":
            return run_overlap(args)
        return run_compare(args)
    except SaeInterpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
