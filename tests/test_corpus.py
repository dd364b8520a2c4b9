"""Corpora to token contexts: seeded, BOS-first, documents separated by EOS, errors that name the
fix."""

from __future__ import annotations

import json
import os

import pytest
import torch

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages.corpus import CorpusSpec, fingerprint, token_contexts


def contexts(source, tokenizer, n_tokens=1024, context_size=64, prepend_bos=True, seed=0, **spec):
    return torch.stack(
        list(
            token_contexts(
                CorpusSpec(source=str(source), **spec),
                tokenizer,
                n_tokens,
                context_size,
                prepend_bos,
                seed,
            )
        )
    )


def test_same_seed_same_contexts_other_seed_other_contexts(corpus_file, tokenizer):
    a = contexts(corpus_file, tokenizer, seed=0)
    assert torch.equal(a, contexts(corpus_file, tokenizer, seed=0))
    assert not torch.equal(a, contexts(corpus_file, tokenizer, seed=1))


def test_contexts_shape_and_bos(corpus_file, tokenizer):
    with_bos = contexts(corpus_file, tokenizer, n_tokens=1000, context_size=64)
    assert with_bos.shape == (16, 64)  # ceil(1000 / 64) contexts of exactly context_size tokens
    assert with_bos.dtype == torch.long
    assert (with_bos[:, 0] == tokenizer.bos_token_id).all()
    assert not (with_bos[:, 1:] == tokenizer.bos_token_id).any()
    without = contexts(corpus_file, tokenizer, n_tokens=1000, context_size=64, prepend_bos=False)
    assert without.shape == (16, 64)
    assert not (without == tokenizer.bos_token_id).any()
    # the same token stream, cut without the BOS slot
    assert torch.equal(without.flatten()[:63], with_bos[0, 1:])


def test_documents_are_whole_lines_separated_by_eos(corpus_file, tokenizer):
    lines = set(corpus_file.read_text().splitlines())
    stream = (
        contexts(corpus_file, tokenizer, n_tokens=2048, context_size=64, prepend_bos=False)
        .flatten()
        .tolist()
    )
    eos = tokenizer.eos_token_id
    cuts = [i for i, t in enumerate(stream) if t == eos]
    assert len(cuts) > 20
    for start, end in zip(
        cuts, cuts[1:], strict=False
    ):  # every complete document between two separators is a corpus line
        assert tokenizer.decode(stream[start + 1 : end]) in lines


def test_small_corpus_runs_dry_with_a_fix(small_corpus_file, tokenizer):
    with pytest.raises(SaeInterpError, match="lower n_tokens") as err:
        contexts(small_corpus_file, tokenizer, n_tokens=100_000)
    assert "ran out after" in str(err.value)


def test_missing_text_field_lists_the_fields(jsonl_corpus, tokenizer):
    with pytest.raises(SaeInterpError, match="text_field") as err:
        contexts(jsonl_corpus, tokenizer, n_tokens=128)
    message = str(err.value)
    assert "'text'" in message and "content" in message and "id" in message
    fixed = contexts(jsonl_corpus, tokenizer, n_tokens=128, text_field="content")
    assert fixed.shape == (2, 64)


def test_folder_corpus(tmp_path, corpus_file, tokenizer):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.txt").write_text("\n".join(corpus_file.read_text().splitlines()[:200]))
    (folder / "b.txt").write_text("\n".join(corpus_file.read_text().splitlines()[200:400]))
    assert contexts(folder, tokenizer, n_tokens=512).shape == (8, 64)
    (folder / "c.jsonl").write_text(json.dumps({"text": "mixed"}) + "\n")
    with pytest.raises(SaeInterpError, match="mixes formats"):
        contexts(folder, tokenizer, n_tokens=512)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.bin").write_bytes(b"\0")
    with pytest.raises(SaeInterpError, match="has no"):
        contexts(empty, tokenizer, n_tokens=512)


def test_unknown_dataset_offline_names_the_fix(tokenizer):
    with pytest.raises(SaeInterpError, match="cannot open corpus .*local path"):
        contexts("hf:no-such-org/no-such-dataset-xyz", tokenizer, n_tokens=128)


@pytest.mark.parametrize("n_tokens,context_size", [(0, 64), (-5, 64), (128, 1)])
def test_non_positive_sizes(n_tokens, context_size, corpus_file, tokenizer):
    with pytest.raises(SaeInterpError, match="must be positive"):
        contexts(corpus_file, tokenizer, n_tokens=n_tokens, context_size=context_size)


def test_stdlib_corpus_is_offline_and_seeded(tokenizer):
    a = contexts("stdlib", tokenizer, n_tokens=256, context_size=128, seed=3)
    assert a.shape == (2, 128) and (a[:, 0] == tokenizer.bos_token_id).all()
    assert torch.equal(a, contexts("stdlib", tokenizer, n_tokens=256, context_size=128, seed=3))


def test_local_fingerprint_follows_the_files(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("one\n")
    before = fingerprint(CorpusSpec(source=str(path)))
    assert before == fingerprint(CorpusSpec(source=str(path)))
    path.write_text("one\ntwo\n")
    os.utime(path, ns=(1, 1))
    assert fingerprint(CorpusSpec(source=str(path))) != before
    assert fingerprint(CorpusSpec(source="stdlib")).startswith("stdlib-py")
