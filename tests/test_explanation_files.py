"""explainer: file: explanations written elsewhere (Neuronpedia exports, delphi explanation
folders, SAEBench autointerp results, this package's samples files), each layout built here from
its documented fields, checked against the SAE being scored, and the latents drawn from those a
file covers."""

from __future__ import annotations

import gzip
import json

import pytest

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages.explanation_files import check_against, read_explanations
from tests.conftest import CAT_LATENT, DOG_LATENT
from tests.helpers import SMALL_PASS, result_files, run_lm_eval, samples

SAE = {"label": "the-sae", "release": None, "sae_id": None, "neuronpedia_id": None}


def np_record(index, text, model="gpt-4o-mini", source="6-res-test"):
    """One record of Neuronpedia's explanation export (its documented fields; index a string)."""
    return {
        "modelId": "smollm2-135m",
        "layer": source,
        "index": str(index),
        "description": text,
        "explanationModelName": model,
        "typeName": "oai_token-act-pair",
    }


def test_a_neuronpedia_export_picks_one_record_per_latent_by_a_fixed_rule(tmp_path):
    records = [
        np_record(3, "cats", model="gpt-4o-mini"),
        np_record(3, "felines", model="claude-3-5-haiku"),
        np_record(7, "dogs", model=None),
        np_record(9, "   "),
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(records))
    got = read_explanations(str(path))
    assert got.layout == "neuronpedia"
    # the explanation model that sorts first wins; a record without one only when it is alone
    assert got.texts == {3: "felines", 7: "dogs"} and got.empty == 1
    assert got.identity == {"neuronpedia_id": "smollm2-135m/6-res-test"}
    assert read_explanations(str(path), prefer_model="gpt-4o-mini").texts == {3: "cats"}
    check_against(got, {**SAE, "neuronpedia_id": "smollm2-135m/6-res-test"}, d_sae=16)
    with pytest.raises(SaeInterpError, match="explains neuronpedia_id 'smollm2-135m/6-res-test'"):
        check_against(got, {**SAE, "neuronpedia_id": "gemma-2-2b/20-gemmascope-res-16k"}, 16)
    with pytest.raises(SaeInterpError, match="explains latent 7 .* has 4 latents"):
        check_against(got, SAE, d_sae=4)


def test_neuronpedia_bulk_batches_and_mixed_saes(tmp_path):
    folder = tmp_path / "explanations"
    folder.mkdir()
    for n, rows in enumerate([[np_record(0, "a"), np_record(1, "b")], [np_record(2, "c")]]):
        lines = "\n".join(json.dumps(r) for r in rows) + "\n"
        (folder / f"batch-{n}.jsonl.gz").write_bytes(gzip.compress(lines.encode()))
    assert read_explanations(str(tmp_path)).texts == {0: "a", 1: "b", 2: "c"}
    mixed = tmp_path / "mixed.json"
    mixed.write_text(json.dumps([np_record(0, "a"), np_record(1, "b", source="7-res-test")]))
    with pytest.raises(SaeInterpError, match="several SAEs .*6-res-test, 7-res-test"):
        read_explanations(str(mixed))


def test_a_delphi_explanations_folder(tmp_path):
    folder = tmp_path / "run" / "explanations"
    folder.mkdir(parents=True)
    (folder / "layers.6.mlp_latent3.txt").write_text(json.dumps("the word cat"))
    (folder / "layers.6.mlp_latent10.txt").write_text(json.dumps("the word dog"))
    got = read_explanations(str(tmp_path / "run"))
    assert got.layout == "delphi" and got.texts == {3: "the word cat", 10: "the word dog"}
    (folder / "layers.7.mlp_latent3.txt").write_text(json.dumps("other"))
    with pytest.raises(SaeInterpError, match="several modules .*explanations_module"):
        read_explanations(str(folder))
    assert read_explanations(str(folder), module="layers.7.mlp").texts == {3: "other"}
    with pytest.raises(SaeInterpError, match="no delphi explanations of module 'layers.8'"):
        read_explanations(str(folder), module="layers.8")


def test_a_saebench_autointerp_file(tmp_path):
    data = {
        "eval_type_id": "autointerp",
        "sae_lens_release_id": "gemma-scope-2b-pt-res",
        "sae_lens_id": "layer_20/width_16k/average_l0_71",
        "eval_result_unstructured": {
            "5": {"latent": 5, "explanation": "legal terms", "score": 0.9},
            "6": {"latent": 6, "explanation": "", "score": 0.5},
        },
    }
    path = tmp_path / "autointerp.json"
    path.write_text(json.dumps(data))
    got = read_explanations(str(path))
    assert got.layout == "saebench" and got.texts == {5: "legal terms"} and got.empty == 1
    ours = {**SAE, "release": "gemma-scope-2b-pt-res", "sae_id": "layer_20/width_16k/canonical"}
    with pytest.raises(SaeInterpError, match="explains sae_id 'layer_20/width_16k/average_l0_71'"):
        check_against(got, ours, d_sae=16384)


def test_unknown_layouts_and_missing_paths_are_one_line_errors(tmp_path):
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"something": 1}))
    with pytest.raises(SaeInterpError, match="unknown explanations layout; explanations_path"):
        read_explanations(str(odd))
    with pytest.raises(SaeInterpError, match="does not exist"):
        read_explanations(str(tmp_path / "nowhere"))
    with pytest.raises(SaeInterpError, match="explainer: file needs explanations_path"):
        from sae_interp_tasks.stages.explainers import ExplainerConfig

        ExplainerConfig(explainer="file")


META = SMALL_PASS


@pytest.mark.slow  # lm_eval end to end
def test_explanations_round_trip_through_our_samples_and_a_file_covers_the_draw(
    planted_sae, corpus_file, sae_cache, tmp_path
):
    """A run's own samples as explanations give the same explanations back; a Neuronpedia file
    covering only the planted latents makes the draw take exactly those, and the results record
    the coverage."""

    def run(out, **meta):
        return run_lm_eval(
            [
                "--model",
                "sae",
                "--model_args",
                f"path={planted_sae.path},device=cpu",
                "--tasks",
                "sae_embedding",
                "--metadata",
                json.dumps({**META, "corpus": str(corpus_file), **meta}),
                "--log_samples",
                "--output_path",
                str(tmp_path / out),
            ],
            sae_cache,
        )

    first = run("first", latents=[CAT_LATENT, DOG_LATENT], explainer="tokens")
    assert first.returncode == 0, first.stderr[-3000:]
    again = run(
        "again",
        latents=[CAT_LATENT, DOG_LATENT],
        explainer="file",
        explanations_path=str(tmp_path / "first"),
    )
    assert again.returncode == 0, again.stderr[-3000:]
    before = {
        r["doc"]["latent"]: r["response"]["explanation"]
        for r in samples(tmp_path / "first", "sae_embedding")
    }
    after = {
        r["doc"]["latent"]: r["response"] for r in samples(tmp_path / "again", "sae_embedding")
    }
    assert {lat: r["explanation"] for lat, r in after.items()} == before
    assert {r["explainer"] for r in after.values()} == {"file:samples"}

    export = tmp_path / "np.json"
    export.write_text(json.dumps([np_record(CAT_LATENT, "cats"), np_record(DOG_LATENT, "dogs")]))
    drawn = run("drawn", n_latents=2, explainer="file", explanations_path=str(export))
    assert drawn.returncode == 0, drawn.stderr[-3000:]
    assert "2 of" in drawn.stderr and "latents covered" in drawn.stderr
    rows = samples(tmp_path / "drawn", "sae_embedding")
    assert sorted(r["doc"]["latent"] for r in rows) == [CAT_LATENT, DOG_LATENT]
    config = json.loads(result_files(tmp_path / "drawn")[0].read_text())["config"]
    (note,) = config["sae_explanations"].values()
    assert note["layout"] == "neuronpedia" and note["covered"] == 2
    assert note["of"] == planted_sae.d_sae

    wrong = tmp_path / "wide.json"
    wrong.write_text(json.dumps([np_record(planted_sae.d_sae + 5, "beyond")]))
    bad = run("bad", explainer="file", explanations_path=str(wrong))
    assert bad.returncode != 0 and not (tmp_path / "bad").exists()
    assert "beyond the width" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def export_bucket():
    """A loopback stand-in for Neuronpedia's export bucket: an S3 ListObjectsV2 listing over two
    pages and the gzipped batches it names."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlparse

    prefix = "v1/smollm2-135m/6-res-test/explanations/"
    batches = {
        f"{prefix}batch-0.jsonl.gz": [np_record(0, "zero"), np_record(1, "one")],
        f"{prefix}batch-1.jsonl.gz": [np_record(2, "two")],
    }
    ns = "http://s3.amazonaws.com/doc/2006-03-01/"
    hits = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            url = urlparse(self.path)
            hits.append(self.path)
            query = parse_qs(url.query)
            if url.path == "/" and query.get("list-type") == ["2"]:
                first = "continuation-token" not in query
                key = sorted(batches)[0 if first else 1]
                more = (
                    "<IsTruncated>true</IsTruncated>"
                    "<NextContinuationToken>p2</NextContinuationToken>"
                )
                body = (
                    f'<ListBucketResult xmlns="{ns}"><Contents><Key>{key}</Key></Contents>'
                    f"{more if first else '<IsTruncated>false</IsTruncated>'}</ListBucketResult>"
                ).encode()
            elif url.path.lstrip("/") in batches:
                rows = batches[url.path.lstrip("/")]
                body = gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode())
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()


def test_a_neuronpedia_export_is_fetched_once_then_read_from_the_cache(
    export_bucket, tmp_path, monkeypatch
):
    from sae_interp_tasks.stages.neuronpedia_exports import EXPORTS_ENV, fetch_export

    url, hits = export_bucket
    monkeypatch.setenv("SAE_INTERP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(EXPORTS_ENV, url)
    folder = fetch_export("smollm2-135m/6-res-test")
    assert sorted(f.name for f in folder.iterdir()) == ["batch-0.jsonl.gz", "batch-1.jsonl.gz"]
    got = read_explanations(str(folder))
    assert got.texts == {0: "zero", 1: "one", 2: "two"}
    assert got.identity == {"neuronpedia_id": "smollm2-135m/6-res-test"}
    before = len(hits)
    monkeypatch.setenv(EXPORTS_ENV, "http://127.0.0.1:9")  # nothing listens: the cache answers
    assert fetch_export("smollm2-135m/6-res-test") == folder and len(hits) == before
    with pytest.raises(SaeInterpError, match="cannot fetch .* download s3://neuronpedia-datasets"):
        fetch_export("smollm2-135m/7-res-test")
    assert not (tmp_path / "cache" / "neuronpedia" / "smollm2-135m" / "7-res-test").exists()
