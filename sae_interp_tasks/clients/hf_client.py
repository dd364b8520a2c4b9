"""An explainer/scorer LLM run in-process with transformers: chat template, batched left-padded
generation, greedy at temperature 0; logprobs always available (top-k of each generated token).

The model loads on the first prompt the cache cannot answer, so a fully cached rerun never loads it.
"""

from __future__ import annotations

import logging
from itertools import groupby
from pathlib import Path

import torch

from sae_interp_tasks.bundled import BUNDLED_MODEL, bundled_hf_dir, is_bundled
from sae_interp_tasks.clients.base import LLMClient, OnAnswer
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt, Reading
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)


class HFClient(LLMClient):
    supports_logprobs = True

    def __init__(self, cfg: ClientConfig, cache: CompletionCache):
        super().__init__(cfg, cache)
        if is_bundled(cfg.model):
            self._source = None  # converted on first use
            model_id = BUNDLED_MODEL
        elif Path(cfg.model).is_dir():
            self._source = model_id = str(Path(cfg.model).resolve())
        else:
            self._source = model_id = cfg.model
        self.name = f"hf:{model_id}"
        self._model = None
        self._tokenizer = None
        self._templates: dict[int, list[int | None] | None] = {}

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM

        tokenizer = self._load_tokenizer()
        log.info("loading %s on %s for LLM calls", self.name, self.cfg.device)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                self._where(), dtype=torch.float32 if self.cfg.device == "cpu" else "auto"
            )
        except OSError as err:
            raise self._cannot_load(err) from err
        self._tokenizer, self._model = tokenizer, model.to(self.cfg.device).eval()

    def _where(self) -> str:
        return str(self._source or bundled_hf_dir())

    def _cannot_load(self, err: OSError) -> SaeInterpError:
        return SaeInterpError(
            f"cannot load LLM {self.cfg.model!r}: {str(err).splitlines()[0][:300]} "
            "(check the name and your hub access, or pass a local Hugging Face folder)"
        )

    def _load_tokenizer(self):
        """The tokenizer alone (the model loads only when a prompt must be answered)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(self._where(), padding_side="left")
            except OSError as err:
                raise self._cannot_load(err) from err
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer = tokenizer
        return self._tokenizer

    def single_token_choices(self, choices: tuple[str, ...]) -> tuple[str, ...]:
        tokenizer = self._load_tokenizer()
        return tuple(
            c for c in choices if len(tokenizer(c, add_special_tokens=False).input_ids) == 1
        )

    def _answer(self, prompts: list[Prompt], on_answer: OnAnswer) -> None:
        if self._model is None:
            self._load()

        def sampling(i: int):
            p = prompts[i]
            top = p.top_logprobs if p.logprobs else 0
            return (p.temperature, p.logprobs, top, p.choice_list, p.choice_one)

        # one generate call needs one sampling setup; within it, similar lengths pad least
        order = sorted(
            range(len(prompts)), key=lambda i: (sampling(i), len(self._chat_text(prompts[i])))
        )
        for _, group in groupby(order, key=sampling):
            group = list(group)
            for start in range(0, len(group), self.cfg.batch_size):
                batch = group[start : start + self.cfg.batch_size]
                for i, completion in zip(
                    batch, self._generate_batch([prompts[i] for i in batch]), strict=True
                ):
                    on_answer(i, completion)

    @torch.no_grad()
    def _prefix(self, prefix: str):
        """The prefix run once: its KV cache and the distribution of the token after it."""
        if self._model is None:
            self._load()
        prefix_ids = self._tokenizer(
            prefix, add_special_tokens=True, return_tensors="pt"
        ).input_ids.to(self.cfg.device)
        out = self._model(prefix_ids, use_cache=True)
        self._count_call()
        self._count_tokens(prefix_ids.shape[1])
        return out.past_key_values, torch.log_softmax(out.logits[0, -1].float(), dim=-1)

    @torch.no_grad()
    def _read_on(self, prefix_cache, seqs: list[list[int]]) -> torch.Tensor:
        """Log-probabilities [batch, width, vocab] of token rows read on from a copy of the
        prefix's KV cache (rows padded on the right; the prefix is visible to every row)."""
        import copy

        device, pad = self.cfg.device, self._tokenizer.pad_token_id
        width = max(len(q) for q in seqs)
        ids = torch.tensor([q + [pad] * (width - len(q)) for q in seqs], device=device)
        mask = torch.tensor([[1] * len(q) + [0] * (width - len(q)) for q in seqs], device=device)
        cache = copy.deepcopy(prefix_cache)
        cache.batch_repeat_interleave(len(seqs))
        seen = torch.cat(
            [
                torch.ones(
                    len(seqs), prefix_cache.get_seq_length(), dtype=mask.dtype, device=device
                ),
                mask,
            ],
            1,
        )
        logp = torch.log_softmax(
            self._model(ids, attention_mask=seen, past_key_values=cache).logits.float(), -1
        )
        self._count_call(len(seqs))
        self._count_tokens(int(mask.sum()))
        return logp

    def _logprobs(self, prefix: str, pairs: list[tuple[str, str]], on_answer) -> None:
        """The prefix runs once; its KV cache is copied for each batch of (context + target)
        rows."""
        prefix_cache, prefix_last = self._prefix(prefix)
        rows = [self._split(context, target) for context, target in pairs]
        order = sorted(range(len(rows)), key=lambda i: -sum(map(len, rows[i])))
        for start in range(0, len(order), self.cfg.batch_size):
            batch = order[start : start + self.cfg.batch_size]
            logp = self._read_on(prefix_cache, [rows[i][0] + rows[i][1] for i in batch])
            for row, i in enumerate(batch):
                context, target = rows[i]
                total = 0.0
                for j, token in enumerate(target):
                    # the position whose next-token distribution predicts it
                    at = len(context) + j - 1
                    total += float(prefix_last[token] if at < 0 else logp[row, at, token])
                on_answer(i, total)

    def _read(
        self,
        prefix: str,
        items: list[tuple[str, tuple[int, ...]]],
        choices: tuple[str, ...],
        on_answer,
    ) -> None:
        """The prefix runs once; each batch of texts reads on from a copy of its KV cache."""
        prefix_cache, prefix_last = self._prefix(prefix)
        choice_ids = [self._single_token(c) for c in choices]
        encoded = [
            self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            for text, _ in items
        ]
        order = sorted(range(len(items)), key=lambda i: -len(encoded[i].input_ids))
        for start in range(0, len(order), self.cfg.batch_size):
            batch = [i for i in order[start : start + self.cfg.batch_size] if encoded[i].input_ids]
            for i in order[start : start + self.cfg.batch_size]:
                if not encoded[i].input_ids:
                    on_answer(
                        i, Reading(offsets=[], logprobs=[], choices=[{} for _ in items[i][1]])
                    )
            if not batch:
                continue
            logp = self._read_on(prefix_cache, [list(encoded[i].input_ids) for i in batch])
            for row, i in enumerate(batch):
                # the distribution that predicts token j sits at position j - 1 (the prefix's last
                # for j = 0)
                dists = torch.cat([prefix_last[None], logp[row, : len(encoded[i].input_ids) - 1]])
                on_answer(i, _reading(encoded[i], dists, items[i][1], choices, choice_ids))

    def _single_token(self, text: str) -> int:
        ids = self._tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) != 1:
            raise SaeInterpError(
                f"{self.name}: the choice {text!r} is {len(ids)} tokens in this tokenizer; "
                "choices must be single tokens"
            )
        return ids[0]

    def _split(self, context: str, target: str) -> tuple[list[int], list[int]]:
        """Token ids of context and target as the model reads them joined (lm-eval's convention)."""
        whole = self._tokenizer(context + target, add_special_tokens=False).input_ids
        head = self._tokenizer(context, add_special_tokens=False).input_ids
        if whole[: len(head)] == head and len(whole) > len(head):
            return head, whole[len(head) :]
        return head, self._tokenizer(target, add_special_tokens=False).input_ids

    def _chat_text(self, prompt: Prompt) -> str:
        messages = [{"role": role, "content": content} for role, content in prompt.messages]
        if self._tokenizer.chat_template is None:  # a base model: plain turns, then the answer
            return "\n\n".join(m["content"] for m in messages) + "\n\n" + prompt.prefill
        return (
            self._tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            + prompt.prefill
        )

    @torch.no_grad()
    def _generate_batch(self, batch: list[Prompt]) -> list[Completion]:
        tokenizer, first = self._tokenizer, batch[0]
        encoded = tokenizer(
            [self._chat_text(p) for p in batch],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,
        ).to(self.cfg.device)
        prompt_len = encoded["input_ids"].shape[1]
        template = self._template_for(first)
        sample = first.temperature > 0
        kwargs = dict(
            max_new_tokens=max(p.max_tokens for p in batch),
            do_sample=sample,
            pad_token_id=tokenizer.pad_token_id,
            return_dict_in_generate=True,
            output_logits=first.logprobs or template is not None,
        )
        if sample:
            kwargs.update(temperature=first.temperature, top_k=0, top_p=1.0)
        if template is not None:
            kwargs.update(
                max_new_tokens=len(template),
                prefix_allowed_tokens_fn=self._allowed(template, prompt_len),
            )
        self._count_call(len(batch))
        out = self._model.generate(**encoded, **kwargs)
        new_tokens = out.sequences[:, prompt_len:]
        generated = (
            (new_tokens != tokenizer.pad_token_id).sum()
            if tokenizer.pad_token_id is not None
            else new_tokens.numel()
        )
        self._count_tokens(int(encoded["attention_mask"].sum()), int(generated))
        stop_ids = _stop_ids(self._model.generation_config.eos_token_id, tokenizer.eos_token_id)
        completions = []
        for row, prompt in enumerate(batch):
            if template is not None:
                completions.append(
                    self._choice_completion(
                        prompt, new_tokens[row].tolist(), out.logits, row, template
                    )
                )
                continue
            ids = new_tokens[row, : prompt.max_tokens].tolist()
            length = next((t for t, tok in enumerate(ids) if tok in stop_ids), len(ids))
            text = prompt.prefill + tokenizer.decode(ids[:length], skip_special_tokens=True)
            top = None
            if prompt.logprobs:
                top = [self._top_k(out.logits[t][row], prompt.top_logprobs) for t in range(length)]
            completions.append(Completion(text=text, top_logprobs=top))
        return completions

    def _template_for(self, prompt: Prompt) -> list | None:
        """The constrained answer's tokens: an id where the token is fixed, a tuple of the allowed
        ids at each choice; None when the answer is free (or this tokenizer cannot spell it)."""
        if prompt.choice_one:
            return self._one_template(prompt.choice_one)
        return self._choice_template(prompt.choice_list) if prompt.choice_list else None

    def _one_template(self, n: int) -> list | None:
        """One digit from 1 to n, when each is a single token of its own."""
        ids = [self._tokenizer.convert_tokens_to_ids(str(k)) for k in range(1, n + 1)]
        if n > 9 or any(i is None or i == self._tokenizer.unk_token_id for i in ids):
            log.warning("%s: cannot constrain a choice of 1..%d; parsed freely", self.name, n)
            return None
        return [tuple(ids)]

    def _choice_template(self, n: int) -> list | None:
        """The token ids of "d, d, ..., d]" with the 0/1 pair at each digit, or None if this
        tokenizer does not spell 0 and 1 as single tokens apart from the separators (then the
        answer is generated freely)."""
        if n not in self._templates:
            zeros, ones = (
                self._tokenizer(", ".join([d] * n) + "]", add_special_tokens=False)["input_ids"]
                for d in "01"
            )
            template = None
            if len(zeros) == len(ones):
                diff = [i for i, (a, b) in enumerate(zip(zeros, ones, strict=True)) if a != b]
                if (
                    len(diff) == n
                    and {zeros[i] for i in diff} == {self._digit_ids[0]}
                    and {ones[i] for i in diff} == {self._digit_ids[1]}
                ):
                    pair = self._digit_ids
                    template = [pair if i in diff else tok for i, tok in enumerate(zeros)]
            if template is None:
                log.warning(
                    "%s: the tokenizer does not spell a 0/1 list digit by digit; scorer answers "
                    "are generated unconstrained and parsed",
                    self.name,
                )
            self._templates[n] = template
        return self._templates[n]

    def _allowed(self, template: list, prompt_len: int):
        eos = self._tokenizer.eos_token_id

        def allowed(_row: int, ids: torch.Tensor) -> list[int]:
            step = ids.shape[-1] - prompt_len
            if step >= len(template):
                return [eos]
            slot = template[step]
            return list(slot) if isinstance(slot, tuple) else [slot]

        return allowed

    def _choice_completion(
        self, prompt: Prompt, ids: list[int], logits, row: int, template: list
    ) -> Completion:
        """A choice list's P(1) at each digit, or a single choice's P(k) for each k."""
        probs = []
        for step, slot in enumerate(template):
            if isinstance(slot, tuple):
                dist = torch.softmax(logits[step][row, list(slot)].float(), dim=-1).tolist()
                probs += dist if prompt.choice_one else [dist[1]]
        text = prompt.prefill + self._tokenizer.decode(
            ids[: len(template)], skip_special_tokens=True
        )
        return Completion(text=text, choice_probs=probs)

    @property
    def _digit_ids(self) -> tuple[int, int]:
        ids = [self._tokenizer.convert_tokens_to_ids(d) for d in "01"]
        if any(i is None or i == self._tokenizer.unk_token_id for i in ids):
            return (-1, -1)
        return ids[0], ids[1]

    def _top_k(self, logits: torch.Tensor, k: int) -> dict[str, float]:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        values, ids = logprobs.topk(k)
        alternatives: dict[str, float] = {}
        for value, token_id in zip(values.tolist(), ids.tolist(), strict=True):
            # best first: keep the max
            alternatives.setdefault(self._tokenizer.decode([token_id]), value)
        return alternatives


def _stop_ids(*sources) -> set[int]:
    ids: set[int] = set()
    for source in sources:
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids


def _reading(
    encoded,
    dists: torch.Tensor,
    spots: tuple[int, ...],
    choices: tuple[str, ...],
    choice_ids: list[int],
) -> Reading:
    """A Reading from one text's tokens and the distributions that predict each of them [tokens,
    vocab]."""
    ids = encoded.input_ids
    starts = [start for start, _ in encoded.offset_mapping]
    token_lp = dists[torch.arange(len(ids)), torch.tensor(ids)].tolist()
    at_spot = []
    for spot in spots:
        # the token that begins there
        j = next((k for k, s in enumerate(starts) if s == spot), None)
        at_spot.append(
            {}
            if j is None
            else {c: float(dists[j, cid]) for c, cid in zip(choices, choice_ids, strict=True)}
        )
    return Reading(
        offsets=starts, logprobs=[float(v) for v in token_lp], choices=at_spot if spots else None
    )
