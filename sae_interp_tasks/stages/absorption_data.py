"""The words and activations of feature absorption (the sae_absorption task): SAEBench's
first-letter protocol on the subject model's own vocabulary.

- The vocabulary (`alpha_words`): every token of the tokenizer that reads as ASCII letters only
  (one leading space allowed), as SAEBench's `get_alpha_tokens` takes it; its class is its first
  letter. Per letter of `absorption_letters`, up to `absorption_words_per_letter` of them are drawn
  (seeded) and split `absorption_test_fraction` into test, the rest into train. A letter with fewer
  than `MIN_WORDS` words is skipped and counted, never scored.
- Each word is asked in an in-context prompt: `absorption_icl_examples` other words of its split,
  each as `absorption_template` followed by its answer (" E"), one per line, then the word's own
  line without the answer ("...\\nelephant has the first letter:"). The activation read is the
  hooked one at the word's own token, found by tokenizing (SAEBench counts a fixed offset from the
  end, -6 for its template; the same token whenever the template's tail tokenizes as it does
  alone). A word whose prompt does not end its prefix on its own single token is skipped.
- The activations do not depend on the SAE: they are cached per subject model, hook, forward,
  settings and seed (`absorption_activations/`), so every SAE at a hook (and both controls) reads
  them back after one forward.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks.caching import cache_key, cache_root
from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages.saved import atomic_save
from sae_interp_tasks.stages.subject import model_fingerprint

log = logging.getLogger(__name__)
LETTERS = "abcdefghijklmnopqrstuvwxyz"
ALPHA = frozenset(LETTERS + LETTERS.upper())
MIN_WORDS = 5  # a letter needs this many words: train and test positives for its probes
BATCH = 16  # prompts per forward
CACHE_FORMAT = 1


@dataclass(frozen=True)
class AbsorptionConfig(StageConfig):
    absorption_letters: str = LETTERS  # the letters scored (one doc each)
    absorption_words_per_letter: int = positive(100)  # SAEBench: every word of the vocabulary
    absorption_test_fraction: float = option(0.2, above=0, below=1)
    absorption_icl_examples: int = option(10, min=0)
    absorption_template: str = "{word} has the first letter:"
    absorption_max_k: int = option(10, min=1, max=50)  # k-sparse probes on k = 1..max_k latents
    absorption_f1_jump: float = option(0.03, min=0)  # a k counts as a split when F1 rises this much
    absorption_l1: float = option(0.01, above=0)  # L1 strength of the latent-selection probe
    absorption_min_probe_f1: float = option(0.6, min=0, max=1)  # letters below are not scored
    absorption_min_letters: int = option(20, min=1)  # fewer scored letters: no score at all

    def check(self) -> None:
        letters = self.absorption_letters
        if (
            not letters
            or any(c not in LETTERS for c in letters)
            or len(set(letters)) < len(letters)
        ):
            raise SaeInterpError(
                f"absorption_letters={letters!r}: give distinct lowercase letters a-z, e.g. "
                f"{LETTERS!r}"
            )
        if self.absorption_template.count("{word}") != 1:
            raise SaeInterpError(
                f"absorption_template={self.absorption_template!r} must hold {{word}} exactly "
                "once, e.g. '{word} has the first letter:'"
            )
        if self.absorption_min_letters > len(letters):
            raise SaeInterpError(
                f"absorption_min_letters={self.absorption_min_letters} is more than the "
                f"{len(letters)} letters of absorption_letters; lower it or score more letters"
            )

    def data_settings(self) -> dict:
        """The settings that decide the words and prompts (the activations' cache key)."""
        return {k: v for k, v in self.as_dict().items() if k in DATA_KEYS}


DATA_KEYS = frozenset(
    {
        "absorption_letters",
        "absorption_words_per_letter",
        "absorption_test_fraction",
        "absorption_icl_examples",
        "absorption_template",
    }
)


@dataclass(frozen=True)
class WordActivations:
    """Per word (train words, then test words): the word as the vocabulary spells it, its letter
    (index into LETTERS), whether it trains, and its hooked activation [words, d_in] at its own
    token; with the letters skipped for too few words (letter -> reason)."""

    words: list[str]
    labels: np.ndarray
    train: np.ndarray
    acts: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)


def first_letter(word: str) -> str:
    return next(c for c in word if c.isalpha()).lower()


def alpha_words(tokenizer) -> list[str]:
    """The vocabulary's tokens that read as letters only (a leading space allowed), as strings."""
    out = []
    for token in sorted(tokenizer.get_vocab()):
        word = tokenizer.convert_tokens_to_string([token])
        bare = word[1:] if word.startswith(" ") else word
        if bare and all(c in ALPHA for c in bare):
            out.append(word)
    return out


def split_words(vocab: list[str], cfg: AbsorptionConfig, seed: int):
    """(train words, test words, skipped letters): per letter, a seeded draw split in two."""
    by_letter: dict[str, list[str]] = {c: [] for c in cfg.absorption_letters}
    for word in sorted(set(vocab)):
        letter = first_letter(word)
        if letter in by_letter:
            by_letter[letter].append(word)
    rng = random.Random(f"{seed}:absorption-words")
    train, test, skipped = [], [], {}
    for letter, words in by_letter.items():
        if len(words) < MIN_WORDS:
            skipped[letter] = (
                f"only {len(words)} single-token words start with {letter!r} (need {MIN_WORDS})"
            )
            continue
        drawn = rng.sample(words, min(len(words), cfg.absorption_words_per_letter))
        n_test = max(1, round(len(drawn) * cfg.absorption_test_fraction))
        test += drawn[:n_test]
        train += drawn[n_test:]
    return train, test, skipped


def prompt(word: str, examples: list[str], template: str) -> tuple[str, str]:
    """(the prompt, its prefix ending with the word) for `word` after its in-context examples."""
    lines = [f"{template.format(word=e)} {first_letter(e).upper()}" for e in examples]
    head, _, _ = template.partition("{word}")
    prefix = "\n" + "".join(line + "\n" for line in lines) + head + word
    return prefix + template.partition("{word}")[2], prefix


def word_prompts(words: list[str], cfg: AbsorptionConfig, rng: random.Random):
    """Per word, its prompt and prefix; the examples are other words of the same list."""
    out = []
    n = min(cfg.absorption_icl_examples, len(words) - 1)
    for word in words:
        examples = [w for w in rng.sample(words, min(len(words), n + 1)) if w != word][:n]
        out.append(prompt(word, examples, cfg.absorption_template))
    return out


def tokenize_prompt(
    tokenizer, word: str, text: str, prefix: str, bos: bool
) -> tuple[list[int], int] | None:
    """(token ids, the word's position) or None when the prompt does not keep the prefix's tokens
    or the word is not one token there."""
    full = tokenizer(text, add_special_tokens=False)["input_ids"]
    head = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    alone = tokenizer(word, add_special_tokens=False)["input_ids"]
    if full[: len(head)] != head or len(alone) != 1 or head[-1] != alone[0]:
        return None
    start = [tokenizer.bos_token_id] if bos else []
    return start + full, len(start) + len(head) - 1


@torch.no_grad()
def read_word_activations(read, tokenizer, cfg: AbsorptionConfig, seed: int, bos: bool):
    """The WordActivations of this config and seed; `read(tokens) -> [B, T, d_in]` is the run's
    hooked-activation reader."""
    vocab = alpha_words(tokenizer)
    train, test, skipped = split_words(vocab, cfg, seed)
    rng = random.Random(f"{seed}:absorption-prompts")
    items = []
    for is_train, words in ((True, train), (False, test)):
        for word, (text, prefix) in zip(words, word_prompts(words, cfg, rng), strict=True):
            tokens = tokenize_prompt(tokenizer, word, text, prefix, bos)
            if tokens is not None:
                items.append((word, is_train, *tokens))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    acts = []
    for start in tqdm(range(0, len(items), BATCH), desc="absorption: prompts", unit="batches"):
        batch = items[start : start + BATCH]
        width = max(len(ids) for *_, ids, _ in batch)
        tokens = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, (*_, ids, _) in enumerate(batch):
            tokens[row, : len(ids)] = torch.tensor(ids)
        positions = torch.tensor([pos for *_, pos in batch])
        x = read(tokens)
        acts.append(x[torch.arange(len(batch)), positions].float().cpu().numpy())
    lost = len(train) + len(test) - len(items)
    if lost:
        log.info("absorption: %d words left out (not one token in their prompt)", lost)
    return WordActivations(
        words=[w for w, *_ in items],
        labels=np.array([LETTERS.index(first_letter(w)) for w, *_ in items]),
        train=np.array([t for _, t, *_ in items], dtype=bool),
        acts=np.concatenate(acts) if acts else np.zeros((0, 0), dtype=np.float32),
        skipped=skipped,
    )


def cached_word_activations(ctx, cfg: AbsorptionConfig, seed: int) -> WordActivations:
    """The word activations of this run's subject model and hook, read back from the cache or
    computed and saved whole."""
    key = {
        "model": ctx.model.cfg.model_name,
        "weights": model_fingerprint(ctx.model),
        "hook": ctx.info.hook_name,
        "bos": ctx.info.prepend_bos,
        "forward": ctx.forward_name,
        "words": cfg.data_settings(),
        "seed": seed,
        "format": CACHE_FORMAT,
    }
    path = cache_root() / "absorption_activations" / cache_key(key) / "words.pt"
    if path.exists():
        try:
            return WordActivations(**torch.load(path, weights_only=False))
        except Exception as err:  # a truncated or foreign file is a cache miss, never a crash
            log.warning("cache entry %s is unreadable (%s); computing it again", path, err)
    got = read_word_activations(
        ctx.read_activations, ctx.tokenizer, cfg, seed, ctx.info.prepend_bos
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(got.__dict__, path)
    return got
