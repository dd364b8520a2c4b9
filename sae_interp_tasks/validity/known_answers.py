"""A known-answer SAE: latents whose meanings are planted, to show the instrument recovers them.

Each latent is a linear probe on the subject model's residual stream at one hook, trained
(scikit-learn's logistic regression) to fire on one meaning of the corpus text: a single token
(" return", " self", ...) or a concept that spans many tokens (digits, Python keywords, brackets).
The SAE is an ordinary sae_lens `StandardSAE` (encoder column = the probe's weights, bias = its
intercept, so a latent's activation is the probe's logit where positive; decoder row = the unit
direction between the meaning's mean activation and the rest), saved with `save_model`, with the
answer for each latent in `answers.json` beside it. Every task then runs on it as on any SAE:

    python -m sae_interp_tasks.validity.known_answers --out DIR [--small]
    lm_eval --model sae --model_args path=DIR --tasks sae_embedding --metadata '{"explainer":
    "tokens"}'

`names_meaning(explanation, meaning)` says whether an explanation names a latent's planted meaning.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sae_interp_tasks.bundled import BUNDLED_MODEL
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.stages.corpus import CorpusSpec, token_contexts
from sae_interp_tasks.stages.subject import load_subject, stop_layer

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.json"
HOOK_NAME = "blocks.6.hook_resid_post"
CONTEXT_SIZE = 256


@dataclass(frozen=True)
class Meaning:
    """What one planted latent fires on, and the words that name it in an explanation."""

    name: str  # e.g. 'the token " return"', "digits"
    kind: str  # "token" | "concept" | "word" (a word whatever its leading spaces)
    token: str | None = None  # token latents: the token's text
    markers: tuple[
        str, ...
    ] = ()  # an explanation naming the meaning contains one of these (case-insensitive)


def token_meaning(token: str) -> Meaning:
    return Meaning(name=f'the token "{token}"', kind="token", token=token, markers=(token.strip(),))


DIGITS = Meaning("digits", "concept", markers=("digit", "number", "numeral", *"0123456789"))
KEYWORD_WORDS = (
    "if",
    "else",
    "elif",
    "for",
    "while",
    "return",
    "def",
    "class",
    "import",
    "from",
    "try",
    "except",
    "raise",
    "not",
    "and",
    "or",
    "in",
    "is",
    "None",
    "True",
    "False",
    "with",
    "as",
    "pass",
    "yield",
    "lambda",
    "break",
    "continue",
    "assert",
    "global",
    "del",
    "finally",
)
KEYWORDS = Meaning("Python keywords", "concept", markers=("keyword", *KEYWORD_WORDS))
BRACKETS = Meaning("brackets", "concept", markers=("bracket", "paren", "brace", *"()[]{}"))
# Concepts a scorer can judge from a window alone: a concept that needs context from before the
# window (a comment line, a string literal) fires where nothing in the window shows it
# (docs/methods.md, "Known answers") frequent in the stdlib corpus (each at least ~100 times in 131k
# tokens), and none a word that explanations use anyway ("the", "token", "word")
TOKENS = (
    " if",
    " return",
    " self",
    " for",
    " not",
    " def",
    " None",
    " os",
    " file",
    " raise",
    " else",
    " key",
    " sys",
    " import",
    " try",
    " except",
)
FULL = tuple(token_meaning(t) for t in TOKENS) + (DIGITS, KEYWORDS, BRACKETS)
SMALL = tuple(token_meaning(t) for t in (" return", " self", " import")) + (DIGITS,)


def names_meaning(explanation: str, meaning: Meaning) -> bool:
    """Whether the explanation names the planted meaning: one of its markers, as a whole word where
    the marker is a word ("is" is not named by "this"; "keyword" is by "keywords"), else as it
    is."""
    text = explanation.lower()
    for marker in meaning.markers:
        m = marker.lower()
        if m.isalpha():
            if re.search(rf"(?<![a-z_]){re.escape(m)}(?:s|es)?(?![a-z_])", text):
                return True
        elif m in text:
            return True
    return False


# --- labelling the corpus ------------------------------------------------------------------------
def label_tokens(ids: list[int], tokenizer, meanings: tuple[Meaning, ...]) -> np.ndarray:
    """[tokens, meanings] bool: which meaning each token of one document (or a piece that starts at
    a document's start) carries."""
    return label_pieces([tokenizer.decode([i]) for i in ids], meanings)


def label_pieces(pieces: list[str], meanings: tuple[Meaning, ...]) -> np.ndarray:
    """[pieces, meanings] bool, for a text given as its tokens' strings."""
    out = np.zeros((len(pieces), len(meanings)), dtype=bool)
    for pos, piece in enumerate(pieces):
        word = piece.strip()
        for m, meaning in enumerate(meanings):
            if meaning.kind == "token":
                out[pos, m] = piece == meaning.token
            elif meaning.kind == "word":  # a word, whatever spaces its token carries
                out[pos, m] = word == meaning.token
            elif meaning.name == DIGITS.name:
                out[pos, m] = word.isdigit()
            elif meaning.name == KEYWORDS.name:
                out[pos, m] = word in KEYWORD_WORDS
            elif meaning.name == BRACKETS.name:
                out[pos, m] = bool(word) and all(ch in "()[]{}" for ch in word)
    return out


# --- the probes ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    weight: np.ndarray  # [d_in], on raw activations
    bias: float
    direction: np.ndarray  # [d_in] unit: mean of the meaning's activations minus the rest's
    precision: float  # on held-out tokens, firing where the logit is positive
    recall: float
    n_positive: int


@torch.no_grad()
def collect(model, hook_name: str, contexts: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """The hooked activation of every token [contexts, T, d_in] (float32, on the CPU)."""
    out = []
    for start in tqdm(
        range(0, len(contexts), batch_size), unit="batches", desc="known answers: activations"
    ):
        tokens = contexts[start : start + batch_size].to(model.cfg.device)
        _, cache = model.run_with_cache(
            tokens, names_filter=hook_name, stop_at_layer=stop_layer(hook_name), return_type=None
        )
        out.append(cache[hook_name].float().cpu())
    return torch.cat(out)


def train_probe(
    x: np.ndarray, y: np.ndarray, held_x: np.ndarray, held_y: np.ndarray, seed: int
) -> Probe:
    from sklearn.linear_model import LogisticRegression

    if y.sum() < 10 or held_y.sum() < 1:
        raise SaeInterpError(
            f"a planted meaning has only {int(y.sum())} training tokens; raise --n-tokens"
        )
    mean, scale = x.mean(0), x.std(0) + 1e-6
    clf = LogisticRegression(C=1.0, max_iter=2000, random_state=seed).fit((x - mean) / scale, y)
    weight = clf.coef_[0] / scale
    bias = float(clf.intercept_[0] - (clf.coef_[0] * mean / scale).sum())
    fires = held_x @ weight + bias > 0
    precision = float((fires & held_y).sum() / max(fires.sum(), 1))
    recall = float((fires & held_y).sum() / max(held_y.sum(), 1))
    direction = x[y].mean(0) - x[~y].mean(0)
    return Probe(
        weight, bias, direction / np.linalg.norm(direction), precision, recall, int(y.sum())
    )


def build(
    out: Path,
    meanings: tuple[Meaning, ...] = FULL,
    n_tokens: int = 131_072,
    hook_name: str = HOOK_NAME,
    model_name: str = BUNDLED_MODEL,
    seed: int = 0,
    device: str = "cpu",
) -> list[Probe]:
    """Train one probe per meaning on `n_tokens` of the stdlib corpus and save the SAE and its
    answers."""
    model = load_subject(model_name, device=device)
    contexts = torch.stack(
        list(token_contexts(CorpusSpec(), model.tokenizer, n_tokens, CONTEXT_SIZE, True, seed))
    )
    acts = collect(model, hook_name, contexts)
    labels = np.stack([label_tokens(c.tolist(), model.tokenizer, meanings) for c in contexts])
    keep = np.ones(contexts.shape, dtype=bool)
    keep[:, 0] = False  # BOS
    keep &= ~np.isin(contexts.numpy(), [model.tokenizer.eos_token_id])
    held = np.zeros(len(contexts), dtype=bool)
    held[::5] = True  # every fifth context: held-out tokens for each probe's precision and recall
    x, y = acts.numpy(), labels
    train_rows, held_rows = keep & ~held[:, None], keep & held[:, None]
    probes = []
    for m, meaning in enumerate(tqdm(meanings, unit="probes", desc="known answers: probes")):
        probes.append(
            train_probe(
                x[train_rows], y[..., m][train_rows], x[held_rows], y[..., m][held_rows], seed
            )
        )
        log.info(
            "%s: precision %.3f recall %.3f (%d tokens)",
            meaning.name,
            probes[-1].precision,
            probes[-1].recall,
            probes[-1].n_positive,
        )
    save(out, meanings, probes, model_name, hook_name, n_tokens, seed)
    return probes


def save(
    out: Path,
    meanings: tuple[Meaning, ...],
    probes: list[Probe],
    model_name: str,
    hook_name: str,
    n_tokens: int,
    seed: int,
) -> None:
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    d_in = probes[0].weight.shape[0]
    cfg = StandardSAEConfig(
        d_in=d_in, d_sae=len(probes), dtype="float32", device="cpu", apply_b_dec_to_input=False
    )
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.W_enc.copy_(
            torch.tensor(np.stack([p.weight for p in probes], axis=1), dtype=torch.float32)
        )
        sae.b_enc.copy_(torch.tensor([p.bias for p in probes], dtype=torch.float32))
        sae.W_dec.copy_(torch.tensor(np.stack([p.direction for p in probes]), dtype=torch.float32))
        sae.b_dec.zero_()
    sae.cfg.metadata = SAEMetadata(
        **{
            **sae.cfg.metadata.to_dict(),
            "model_name": model_name,
            "hook_name": hook_name,
            "hook_head_index": None,
            "prepend_bos": True,
            "context_size": CONTEXT_SIZE,
            "dataset_path": "stdlib",
            "model_from_pretrained_kwargs": {},
            "trained_by": "sae_interp_tasks.validity.known_answers",
            # every latent is a doc (saes.INSTRUMENT_DEFAULTS_KEY); a user's --metadata wins
            "sae_interp_defaults": {"n_latents": len(probes)},
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    sae.save_model(out)
    answers = {
        "hook_name": hook_name,
        "n_tokens": n_tokens,
        "seed": seed,
        "latents": [
            {
                "latent": i,
                **asdict(m),
                "probe": {
                    "precision": round(p.precision, 4),
                    "recall": round(p.recall, 4),
                    "training_tokens": p.n_positive,
                },
            }
            for i, (m, p) in enumerate(zip(meanings, probes, strict=True))
        ],
    }
    (out / ANSWERS_FILE).write_text(json.dumps(answers, indent=1) + "\n")


def load_answers(folder: Path) -> dict[int, Meaning]:
    """latent -> its planted meaning, from a known-answer SAE's answers.json."""
    data = json.loads((Path(folder) / ANSWERS_FILE).read_text())
    return {
        row["latent"]: Meaning(row["name"], row["kind"], row["token"], tuple(row["markers"]))
        for row in data["latents"]
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a known-answer SAE for the bundled model.")
    parser.add_argument(
        "--out", type=Path, required=True, help="folder to save the SAE and answers.json in"
    )
    parser.add_argument(
        "--small", action="store_true", help="4 latents (3 tokens and digits) instead of 19"
    )
    parser.add_argument(
        "--n-tokens", type=int, default=131_072, help="corpus tokens the probes are trained on"
    )
    parser.add_argument("--hook", default=HOOK_NAME)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    build(args.out, SMALL if args.small else FULL, args.n_tokens, args.hook, seed=args.seed)


if __name__ == "__main__":
    main()
