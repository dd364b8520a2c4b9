"""sae_core's chunk loop and its caches: per chunk, the SAE-independent reference (hooked
activation, clean and zero-ablated losses; `core_reference/`) and each SAE's statistics
(`core_stats/`), computed with `stages.core` and saved whole (`stages.saved.atomic_save`), so an
interrupted run resumes."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sae_interp_tasks.caching import cache_key, cache_root
from sae_interp_tasks.stages import core
from sae_interp_tasks.stages.core import ChunkReference, CoreConfig, CoreStats
from sae_interp_tasks.stages.corpus import CorpusSpec, fingerprint, token_contexts
from sae_interp_tasks.stages.saved import atomic_save
from sae_interp_tasks.stages.subject import model_fingerprint

log = logging.getLogger(__name__)
# chunk entries are saved as plain dicts (no pickled classes); 3: SAEBench's extra sums; 4: its KL
# divergences, legacy explained variance and per-latent context counts; 5: positions read; 6: the
# KL terms summed over the vocabulary in float64
CACHE_FORMAT = 6


def chunk_statistics(
    model,
    sae,
    info,
    reader,
    forward_name: str,
    spec: CorpusSpec,
    cfg: CoreConfig,
    seed: int,
    wanted: list[int],
    device: str,
    desc: str = "chunks",
) -> dict[int, tuple[CoreStats, str]]:
    """{chunk: (statistics, sha256 of its tokens)} for the chunks `wanted`.

    Each chunk's SAE-independent part (the hooked activation, the clean and zero-ablated losses) is
    cached per subject model, hook, corpus and seed (`core_reference/`); each SAE's statistics per
    SAE (`core_stats/`). An interrupted run resumes; a second SAE at the same hook pays only for
    its encode and the spliced forward from the hook on."""
    special = core.special_ids(model.tokenizer)
    ref_folder, sae_folder = _folders(model, info, forward_name, spec, cfg, seed)
    contexts = token_contexts(
        spec,
        model.tokenizer,
        (max(wanted) + 1) * cfg.chunk_tokens,
        cfg.context_size,
        info.prepend_bos,
        seed,
    )
    zero: list = []  # the zero-ablated logits, computed once when a chunk needs them
    one_hook = None if info.hook_name_out else reader  # the reader reads one hook
    out = {}
    bar = tqdm(total=len(wanted), unit="chunks", desc=desc)
    for chunk in range(max(wanted) + 1):
        batch = [next(contexts) for _ in range(cfg.chunk_contexts)]
        if chunk not in wanted:
            continue
        stats = _load(sae_folder / f"chunk{chunk}.pt", CoreStats)
        if stats is None:
            tokens = torch.stack(batch).to(device)
            reference = _load(ref_folder / f"chunk{chunk}.pt", ChunkReference)
            if reference is None:
                if not zero:
                    zero.append(core.zero_ablation_logits(model, info.write_hook))
                reference = core.chunk_reference(
                    model, info.hook_name, tokens, special, one_hook, zero[0], info.hook_name_out
                )
                atomic_save(dataclasses.asdict(reference), ref_folder / f"chunk{chunk}.pt")
            stats = core.chunk_stats(
                model, sae, info.hook_name, tokens, reference, special, info.hook_name_out
            )
            atomic_save(dataclasses.asdict(stats), sae_folder / f"chunk{chunk}.pt")
        out[chunk] = (stats, tokens_sha256(batch))
        bar.update(1)
    bar.close()
    return out


def _folders(model, info, forward_name: str, spec, cfg, seed: int) -> tuple[Path, Path]:
    """The cache folders of the chunks' references (what does not depend on the SAE) and of this
    SAE's statistics."""
    where = {
        "model": model.cfg.model_name,
        "weights": model_fingerprint(model),
        "hook": info.hook_name,
        "bos": info.prepend_bos,
        "corpus": spec,
        "corpus_fp": fingerprint(spec),
        "config": cfg,
        "seed": seed,
        "forward": forward_name,
        "format": CACHE_FORMAT,
        **({"hook_out": info.hook_name_out} if info.hook_name_out else {}),
    }
    return _folder("core_reference", where), _folder(
        "core_stats", {**where, "sae": info.fingerprint}
    )


def tokens_sha256(contexts: list[torch.Tensor]) -> str:
    """A chunk's token ids, hashed: `sae-interp compare` pairs two runs' chunks only where these
    agree (the same settings can read different text, e.g. `corpus: sae` is each SAE's own training
    set)."""
    ids = torch.stack(contexts).to(torch.int64).cpu().numpy()
    return hashlib.sha256(ids.tobytes()).hexdigest()[:16]


def _folder(kind: str, key: dict) -> Path:
    folder = cache_root() / kind / cache_key(key)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _load(path: Path, record: type):
    """A cached chunk entry as `record`, or None when absent or unreadable (then it is computed
    again)."""
    if not path.exists():
        return None
    try:
        return record(**torch.load(path, weights_only=False))
    except Exception as err:  # a truncated or foreign file is a cache miss, never a crash
        log.warning(
            "cache entry %s is unreadable (%s); computing it again", path, type(err).__name__
        )
        return None
