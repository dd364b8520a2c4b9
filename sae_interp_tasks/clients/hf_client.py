"""An explainer/scorer LLM run in-process with transformers: chat template, batched left-padded
generation, greedy at temperature 0; logprobs always available (top-k of each generated token).

The model loads on the first prompt the cache cannot answer, so a fully cached rerun never loads it.
"""

from __future__ import annotations

import logging
from itertools import groupby
from pathlib import Path

import torch

from sae_interp_tasks.clients.base import ClientConfig, Completion, LLMClient, OnAnswer, Prompt
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.subject import BUNDLED_MODEL, bundled_hf_dir, is_bundled

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

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source = str(self._source or bundled_hf_dir())
        log.info("loading %s on %s for LLM calls", self.name, self.cfg.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, padding_side="left")
            model = AutoModelForCausalLM.from_pretrained(
                source, dtype=torch.float32 if self.cfg.device == "cpu" else "auto")
        except OSError as err:
            raise SaeInterpError(f"cannot load LLM {self.cfg.model!r}: {str(err).splitlines()[0][:300]} "
                                 "(check the name and your hub access, or pass a local Hugging Face folder)") from err
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer, self._model = tokenizer, model.to(self.cfg.device).eval()

    def _answer(self, prompts: list[Prompt], on_answer: OnAnswer) -> None:
        if self._model is None:
            self._load()

        def sampling(i: int):
            p = prompts[i]
            return (p.temperature, p.logprobs, p.top_logprobs if p.logprobs else 0)

        # one generate call needs one sampling setup; within it, similar lengths pad least
        order = sorted(range(len(prompts)), key=lambda i: (sampling(i), len(self._chat_text(prompts[i]))))
        for _, group in groupby(order, key=sampling):
            group = list(group)
            for start in range(0, len(group), self.cfg.batch_size):
                batch = group[start:start + self.cfg.batch_size]
                for i, completion in zip(batch, self._generate_batch([prompts[i] for i in batch])):
                    on_answer(i, completion)

    def _chat_text(self, prompt: Prompt) -> str:
        messages = [{"role": role, "content": content} for role, content in prompt.messages]
        if self._tokenizer.chat_template is None:  # a base model: plain turns, then the answer
            return "\n\n".join(m["content"] for m in messages) + "\n\n" + prompt.prefill
        return self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False) + prompt.prefill

    @torch.no_grad()
    def _generate_batch(self, batch: list[Prompt]) -> list[Completion]:
        tokenizer, first = self._tokenizer, batch[0]
        encoded = tokenizer([self._chat_text(p) for p in batch], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(self.cfg.device)
        sample = first.temperature > 0
        kwargs = dict(max_new_tokens=max(p.max_tokens for p in batch), do_sample=sample,
                      pad_token_id=tokenizer.pad_token_id, return_dict_in_generate=True,
                      output_logits=first.logprobs)
        if sample:
            kwargs.update(temperature=first.temperature, top_k=0, top_p=1.0)
        self._count_call(len(batch))
        out = self._model.generate(**encoded, **kwargs)
        new_tokens = out.sequences[:, encoded["input_ids"].shape[1]:]
        stop_ids = _stop_ids(self._model.generation_config.eos_token_id, tokenizer.eos_token_id)
        completions = []
        for row, prompt in enumerate(batch):
            ids = new_tokens[row, :prompt.max_tokens].tolist()
            length = next((t for t, tok in enumerate(ids) if tok in stop_ids), len(ids))
            text = prompt.prefill + tokenizer.decode(ids[:length], skip_special_tokens=True)
            top = None
            if prompt.logprobs:
                top = [self._top_k(out.logits[t][row], prompt.top_logprobs) for t in range(length)]
            completions.append(Completion(text=text, top_logprobs=top))
        return completions

    def _top_k(self, logits: torch.Tensor, k: int) -> dict[str, float]:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        values, ids = logprobs.topk(k)
        alternatives: dict[str, float] = {}
        for value, token_id in zip(values.tolist(), ids.tolist()):
            alternatives.setdefault(self._tokenizer.decode([token_id]), value)  # best first: keep the max
        return alternatives


def _stop_ids(*sources) -> set[int]:
    ids: set[int] = set()
    for source in sources:
        if isinstance(source, int):
            ids.add(source)
        elif source:
            ids.update(source)
    return ids
