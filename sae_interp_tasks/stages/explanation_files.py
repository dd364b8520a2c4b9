"""Explanations written elsewhere, read for `explainer: file` (docs/methods.md, "Explanations
from a file").

Four layouts, told apart by their content:
- `neuronpedia`: Neuronpedia's explanation exports: the bulk export's `batch-N.jsonl.gz` files (a
  folder of them, or one), or the older JSON array; records `{modelId, layer, index, description,
  explanationModelName, ...}` with `index` a string, several records per latent possible;
- `delphi`: a delphi run's `explanations/` folder (or the run folder): one file per latent,
  `<module>_latent<index>.txt`, holding the explanation as a JSON string;
- `saebench`: a SAEBench autointerp result file (`eval_type_id: autointerp`), the explanations
  in `eval_result_unstructured[<index>].explanation`;
- `samples`: this package's own `samples_<task>_*.jsonl(.gz)` files (or an lm_eval
  `--output_path` folder holding them), the explanation each latent task logged.

Every layout names latents by index. What a file says about the SAE it explains (Neuronpedia's
modelId/layer, SAEBench's release and sae_id, the results file's weights fingerprint) is checked
against the SAE being scored where both sides name it.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.reports.samples_io import sample_rows

LAYOUTS = ("neuronpedia", "delphi", "saebench", "samples")
_DELPHI_FILE = re.compile(r"^(?P<module>.+)_latent(?P<index>\d+)\.txt$")


@dataclass(frozen=True)
class ExplanationFile:
    """The explanations a file holds: latent -> text (non-empty), the records left out for an
    empty text, and the identity fields the file carries (e.g. {"neuronpedia_id": "m/l"})."""

    path: str
    layout: str
    texts: dict[int, str]
    empty: int = 0
    identity: dict = field(default_factory=dict)


def _text(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if path.suffix == ".gz" else data).decode("utf-8")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in _text(path).splitlines() if line.strip()]


def _one_of(values: set, what: str, path: str) -> str | None:
    if len(values) > 1:
        raise SaeInterpError(
            f"{path} holds explanations of several {what}s ({', '.join(sorted(values))}); give "
            "the file of one SAE"
        )
    return next(iter(values), None)


def _finish(path: str, layout: str, pairs, identity: dict) -> ExplanationFile:
    texts, empty = {}, 0
    for index, text in pairs:
        text = str(text or "").strip()
        if not text:
            empty += 1
            continue
        texts.setdefault(int(index), text)
    return ExplanationFile(path, layout, texts, empty, identity)


def read_neuronpedia(records: list[dict], path: str, prefer_model: str | None) -> ExplanationFile:
    """Several records per latent: those of `prefer_model` (explanationModelName) when given,
    else the one whose explanationModelName sorts first (records without one last), ties in file
    order: a fixed rule, so a rerun reads the same explanations."""
    if prefer_model:
        records = [r for r in records if r.get("explanationModelName") == prefer_model]
    ranked = sorted(
        enumerate(records),
        key=lambda ir: (
            ir[1].get("explanationModelName") is None,
            ir[1].get("explanationModelName") or "",
            ir[0],
        ),
    )
    models = {str(r["modelId"]) for r in records if r.get("modelId")}
    layers = {str(r["layer"]) for r in records if r.get("layer")}
    model, layer = _one_of(models, "model", path), _one_of(layers, "SAE", path)
    identity = {"neuronpedia_id": f"{model}/{layer}"} if model and layer else {}
    return _finish(
        path, "neuronpedia", ((r["index"], r.get("description")) for _, r in ranked), identity
    )


def read_delphi(folder: Path, module: str | None) -> ExplanationFile:
    found: dict[str, list[tuple[int, Path]]] = {}
    for file in sorted(folder.iterdir()):
        match = _DELPHI_FILE.match(file.name)
        if match:
            found.setdefault(match["module"], []).append((int(match["index"]), file))
    if module is None and len(found) > 1:
        raise SaeInterpError(
            f"{folder} holds delphi explanations of several modules ({', '.join(sorted(found))}); "
            'pick one with --metadata \'{"explanations_module": "..."}\''
        )
    chosen = module if module is not None else next(iter(found))
    if chosen not in found:
        raise SaeInterpError(
            f"{folder} has no delphi explanations of module {chosen!r} "
            f"(it has: {', '.join(sorted(found))})"
        )
    pairs = ((index, json.loads(_text(file))) for index, file in found[chosen])
    return _finish(str(folder), "delphi", pairs, {"delphi_module": chosen})


def read_saebench(data: dict, path: str) -> ExplanationFile:
    rows = data.get("eval_result_unstructured") or {}
    identity = {
        k: v
        for k, v in {
            "release": data.get("sae_lens_release_id"),
            "sae_id": data.get("sae_lens_id"),
        }.items()
        if v
    }
    pairs = ((index, (row or {}).get("explanation")) for index, row in rows.items())
    return _finish(path, "saebench", pairs, identity)


def read_samples(files: list[Path], path: str) -> ExplanationFile:
    """Our own samples files: each row's response names its latent and explanation; the results
    file beside them names the SAE's weights fingerprint."""
    seen: dict[int, tuple[str, str]] = {}
    for file in files:
        for _, response in sample_rows(file):
            latent, text = response.get("latent"), response.get("explanation")
            if latent is None or text is None:
                continue
            earlier = seen.get(int(latent))
            if earlier is not None and earlier[0] != text:
                raise SaeInterpError(
                    f"latent {latent} has two explanations in {path} ({earlier[1]} and "
                    f"{file.name}); give one run's samples"
                )
            seen.setdefault(int(latent), (text, file.name))
    prints = set()
    for file in files:
        for results in file.parent.glob("results_*.json"):
            config = json.loads(results.read_text()).get("config") or {}
            if config.get("sae_fingerprint"):
                prints.add(str(config["sae_fingerprint"]))
    identity = {"fingerprint": _one_of(prints, "SAE fingerprint", path)} if prints else {}
    return _finish(path, "samples", ((k, v[0]) for k, v in seen.items()), identity)


def read_explanations(
    path: str, module: str | None = None, prefer_model: str | None = None
) -> ExplanationFile:
    """The explanations at `path`, whichever layout it has."""
    p = Path(path).expanduser()
    if not p.exists():
        raise SaeInterpError(f"explanations_path {path} does not exist; give a file or folder")
    if p.is_dir():
        return _read_folder(p, module, prefer_model)
    if re.match(r"samples_.+\.jsonl(\.gz)?$", p.name):
        return read_samples([p], path)
    if p.name.endswith((".jsonl", ".jsonl.gz")):
        return read_neuronpedia(_jsonl(p), path, prefer_model)
    try:
        data = json.loads(_text(p))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SaeInterpError(f"{path} is not JSON ({err}); {_layouts_hint()}") from err
    if isinstance(data, dict) and data.get("eval_type_id") == "autointerp":
        return read_saebench(data, path)
    if isinstance(data, list) and data and isinstance(data[0], dict) and "index" in data[0]:
        return read_neuronpedia(data, path, prefer_model)
    raise SaeInterpError(f"{path}: unknown explanations layout; {_layouts_hint()}")


def _read_folder(p: Path, module: str | None, prefer_model: str | None) -> ExplanationFile:
    inner = p / "explanations"
    if inner.is_dir():
        p = inner
    if any(_DELPHI_FILE.match(f.name) for f in p.iterdir()):
        return read_delphi(p, module)
    batches = sorted(p.glob("batch-*.jsonl*"))
    if batches:
        records = [r for b in batches for r in _jsonl(b)]
        return read_neuronpedia(records, str(p), prefer_model)
    samples = sorted(Path(f) for f in glob.glob(str(p / "**" / "samples_*.jsonl*"), recursive=True))
    if samples:
        return read_samples(samples, str(p))
    raise SaeInterpError(f"{p} holds no explanations this package reads; {_layouts_hint()}")


def _layouts_hint() -> str:
    return (
        "explanations_path takes a Neuronpedia export (JSON array, batch-N.jsonl.gz or their "
        "folder), a delphi explanations folder, a SAEBench autointerp result file, or this "
        "package's samples files"
    )


def check_against(found: ExplanationFile, sae: dict, d_sae: int) -> None:
    """The file belongs to the SAE: each identity field both sides name agrees, and no latent
    index lies beyond the SAE's width. `sae`: release, sae_id, neuronpedia_id, fingerprint (None
    where unknown) and label."""
    for key, theirs in found.identity.items():
        ours = sae.get(key)
        if ours and theirs and str(ours).lower() != str(theirs).lower():
            raise SaeInterpError(
                f"{found.path} explains {key} {theirs!r} but the SAE being scored ({sae['label']}) "
                f"is {ours!r}; give the explanations of this SAE"
            )
    beyond = sorted(i for i in found.texts if not 0 <= i < d_sae)
    if beyond:
        raise SaeInterpError(
            f"{found.path} explains latent {beyond[0]} ({len(beyond)} beyond the width) but "
            f"{sae['label']} has {d_sae} latents; give the explanations of this SAE"
        )
    if not found.texts:
        raise SaeInterpError(f"{found.path} holds no non-empty explanation ({found.layout} layout)")
