"""The oracle scorer: a stand-in for a perfect LLM that knows a known-answer SAE's planted meanings.

`scorer: oracle` (and `surprisal_scorer: oracle`) with `scorer_model` / `surprisal_model` naming a
folder built by `known_answers` answer every scorer's questions from the planted answers: which
meaning an explanation names (`known_answers.names_meaning`; 'the word "X"' of the scorer check
names X), and which tokens of a text carry it (`known_answers.label_pieces`). It reads prompts as
this package's scorers write them. With it every scorer should reach its best score on the known
answers and chance with shuffled explanations; if not, the instrument, not the scorer, is at fault.
It is a validity instrument: with another SAE its numbers mean nothing.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from sae_interp_tasks.clients.base import LLMClient
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt, Reading
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.validity.known_answers import (
    ANSWERS_FILE,
    Meaning,
    label_pieces,
    load_answers,
    names_meaning,
)

SURE, UNSURE = math.log(0.99), math.log(0.01)
# log-probabilities of a text's tokens when the description does / does not explain them
HIT, MISS = (
    -1.0,
    -6.0,
)


class OracleClient(LLMClient):
    supports_logprobs = True

    def __init__(self, cfg: ClientConfig, cache: CompletionCache | None = None):
        # answers cost nothing: none is kept, so they always follow the answers
        super().__init__(cfg, _NoCache())
        folder = Path(cfg.model)
        if not (folder / ANSWERS_FILE).is_file():
            raise SaeInterpError(
                "the oracle scorer needs a known-answer SAE folder as its model (with "
                f"{ANSWERS_FILE}), "
                f"got {cfg.model!r}; build one with python -m "
                "sae_interp_tasks.validity.known_answers"
            )
        self.meanings = list(load_answers(folder).values())
        self.name = f"oracle:{folder.resolve()}"
        self._tokenizer = None

    # --- what the oracle knows
    # ----------------------------------------------------------------------
    def meaning_of(self, explanation: str) -> Meaning | None:
        """The planted meaning an explanation names; else the one word it quotes ('the word "X"');
        else None."""
        found = next((m for m in self.meanings if names_meaning(explanation, m)), None)
        quoted = re.findall(r'"([^"]+)"', explanation)
        if found is None and len(quoted) == 1:  # the scorer check's 'the word "X"'
            found = Meaning(explanation, "word", quoted[0].strip(), (quoted[0].strip(),))
        return found

    def carried(self, pieces: list[str], meaning: Meaning | None) -> list[bool]:
        """Which of a text's tokens (given as strings) carry the meaning."""
        if meaning is None or not pieces:
            return [False] * len(pieces)
        return label_pieces(pieces, (meaning,))[:, 0].tolist()

    def pieces(self, text: str) -> tuple[list[str], list[int]]:
        """A text's tokens (the bundled model's tokenizer) and their character offsets."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from sae_interp_tasks.bundled import bundled_hf_dir

            self._tokenizer = AutoTokenizer.from_pretrained(str(bundled_hf_dir()))
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return [text[a:b] for a, b in enc.offset_mapping], [a for a, _ in enc.offset_mapping]

    # --- chat answers
    # ------------------------------------------------------------------------------
    def _answer(self, prompts: list[Prompt], on_answer) -> None:
        for i, prompt in enumerate(prompts):
            self._count_call()
            on_answer(
                i, self._chat(dict(prompt.messages).get("system", ""), prompt.messages[-1][1])
            )

    def _chat(self, system: str, user: str) -> Completion:
        if "Your list of" in user and user.startswith("Explanation: "):
            return self._classify(system, user)
        if "Answer with a JSON list" in system:
            explanation, cells = _read_table(user)
            top = int(re.search(r"from 0 to (\d+)", system).group(1))
            return Completion(
                text=json.dumps(
                    [top if c else 0 for c in self.carried(cells, self.meaning_of(explanation))]
                )
            )
        if user.rstrip().endswith("Which example is the intruder?"):
            return self._pick_intruder(user)
        if user.rstrip().endswith("Which set?"):
            return Completion(text=str(self._pick_set(user)))
        if user.rstrip().endswith("Same thing?"):
            a, b = re.search(r"Description A: (.*)\nDescription B: (.*)\n", user).groups()
            same = self.meaning_of(a) is not None and _same(self.meaning_of(a), self.meaning_of(b))
            return Completion(text="yes" if same else "no")
        return Completion(
            text=None, error="the oracle scorer answers only this package's scorer prompts"
        )

    def _classify(self, system: str, user: str) -> Completion:
        explanation = re.match(r"Explanation: (.*)\n\n", user).group(1)
        meaning = self.meaning_of(explanation)
        body = user.split("\n\n", 1)[1].rsplit("\n\nYour list of", 1)[0]
        examples = re.split(r"(?:^|\n)Example \d+: ", body)[1:]
        said = [
            self._marked_ok(text, meaning)
            if "marked <<like this>>" in system
            else any(self.carried(self.pieces(text)[0], meaning))
            for text in examples
        ]
        return Completion(
            text="[" + ", ".join("1" if v else "0" for v in said) + "]",
            choice_probs=[0.99 if v else 0.01 for v in said],
        )

    def _marked_ok(self, text: str, meaning: Meaning | None) -> bool:
        """Fuzzing: every marked token carries the meaning."""
        hits = [any(self.carried([p], meaning)) for p in self._marked_pieces(text)]
        return bool(hits) and all(hits)

    def _marked_pieces(self, text: str, everything: bool = False) -> list[str]:
        """The tokens of a text marked <<like this>> (words only); with `everything`, all its
        tokens when none is marked."""
        plain, marked, inside = "", [], False
        for part in re.split(r"(<<|>>)", text):
            if part in ("<<", ">>"):
                inside = part == "<<"
                continue
            if inside:
                marked.append((len(plain), len(plain) + len(part)))
            plain += part
        pieces, starts = self.pieces(plain)
        return [
            p
            for p, s in zip(pieces, starts, strict=True)
            if p.strip() and (any(a <= s < b for a, b in marked) or (everything and not marked))
        ]

    def _pick_intruder(self, user: str) -> Completion:
        """The example without the meaning most of the others' marked tokens carry (a planted one
        first, else a word); with no meaning shared by two examples it cannot tell, and names the
        first."""
        texts = re.findall(r"^Example \d+: (.*)$", user, flags=re.M)
        marked = [self._marked_pieces(t, everything=True) for t in texts]
        words = {p.strip() for ps in marked for p in ps if _is_word(p)}
        candidates = self.meanings + [Meaning(w, "word", w, (w,)) for w in sorted(words)]
        counts = [sum(any(self.carried(ps, m)) for ps in marked) for m in candidates]
        shared = [i for i, c in enumerate(counts) if 2 <= c < len(texts)]
        pick = 0
        if shared:
            best = candidates[max(shared, key=lambda i: counts[i])]
            pick = next(i for i, ps in enumerate(marked) if not any(self.carried(ps, best)))
        probs = [0.9 if i == pick else 0.1 / max(1, len(texts) - 1) for i in range(len(texts))]
        return Completion(text=str(pick + 1), choice_probs=probs)

    def _pick_set(self, user: str) -> int:
        explanation = re.match(r"Description: (.*)\n", user).group(1)
        meaning = self.meaning_of(explanation)
        sets = re.split(
            r"\n\nSet \d+:\n|\nSet \d+:\n",
            "\n" + user.split("\n\n", 1)[1].rsplit("\n\nWhich set?", 1)[0],
        )
        sets = [s for s in sets if s.strip()]
        counts = [sum(self.carried(self.pieces(s)[0], meaning)) for s in sets]
        return 1 + max(range(len(counts)), key=lambda i: counts[i])

    # --- reading texts
    # -----------------------------------------------------------------------------
    def _read(
        self,
        prefix: str,
        items: list[tuple[str, tuple[int, ...]]],
        choices: tuple[str, ...],
        on_answer,
    ) -> None:
        for i, (text, spots) in enumerate(items):
            self._count_call()
            if text.startswith("Description: ") and "\nTokens:\n" in text:
                on_answer(i, self._simulate(text, spots, choices))
            else:
                on_answer(i, self._surprise(prefix, text))

    def _simulate(self, text: str, spots: tuple[int, ...], choices: tuple[str, ...]) -> Reading:
        explanation, cells = _read_table(text)
        carries = self.carried(cells, self.meaning_of(explanation))
        top = max(choices, key=int)
        return Reading(
            offsets=[],
            logprobs=[],
            choices=[
                {c: SURE if c == (top if on else "0") else UNSURE for c in choices}
                for on in carries
            ],
        )

    def _surprise(self, prefix: str, text: str) -> Reading:
        described = prefix.rsplit("Description: ", 1)[-1].split("\n", 1)[0]
        pieces, starts = self.pieces(text)
        carries = self.carried(pieces, self.meaning_of(described))
        return Reading(offsets=starts, logprobs=[HIT if c else MISS for c in carries])

    def _logprobs(self, prefix: str, pairs: list[tuple[str, str]], on_answer) -> None:
        """The intervention's surprisal reader: the claim is likely after a passage that carries
        it."""
        for i, (context, target) in enumerate(pairs):
            self._count_call()
            passage = context.split("<PASSAGE>\n", 1)[-1].rsplit("\n\n", 1)[0]
            carries = self.carried(self.pieces(passage)[0], self.meaning_of(target.rstrip('"')))
            on_answer(i, HIT if any(carries) else 10 * MISS)


def _read_table(text: str) -> tuple[str, list[str]]:
    """(explanation, token cells) of a simulation table."""
    explanation = re.match(r"Description: (.*)\n", text).group(1)
    rows = text.split("\nTokens:\n", 1)[1].rstrip("\n").split("\n")
    cells = [row.rsplit("\t", 1)[0] for row in rows if "\t" in row]
    return explanation, [
        c.replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\") for c in cells
    ]


def _is_word(piece: str) -> bool:
    return len(piece.strip()) >= 3 and piece.strip().isalpha()


def _same(a: Meaning | None, b: Meaning | None) -> bool:
    return (
        a is not None
        and b is not None
        and (a.name == b.name or (a.token or "").strip() == (b.token or "").strip())
    )


class _NoCache:
    """A cache that keeps nothing (the oracle's answers are computed in no time)."""

    key = staticmethod(CompletionCache.key)
    logprob_key = staticmethod(CompletionCache.logprob_key)
    reading_key = staticmethod(CompletionCache.reading_key)

    def get_many(self, keys):
        return {}

    get_logprobs = get_readings = get_many

    def put(self, key, value) -> None:
        pass

    put_logprob = put_reading = put
