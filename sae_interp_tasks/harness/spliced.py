"""lm-eval's stock request types (`loglikelihood`, `loglikelihood_rolling`, `generate_until`) on
the subject model with the SAE's reconstruction spliced in at its hook, so any harness task
(wikitext, hellaswag, ...) measures what splicing the SAE costs. A mixin of `SAEBackend`, which
provides the model, the tokenizer and `spliced()`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.models.utils import Collator, handle_stop_sequences
from tqdm.auto import tqdm


class SplicedRequests:
    """The stock request types, answered with the SAE spliced in (`self.spliced()`)."""

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        # longest first: a batch pads little and memory peaks early
        collator = Collator(
            requests, sort_fn=lambda req: (-len(req[1] + req[2]), tuple(req[1] + req[2]))
        )
        results = []
        bar = tqdm(
            total=len(requests),
            unit="requests",
            desc="loglikelihood (SAE spliced)",
            disable=disable_tqdm,
        )
        for batch in collator.get_batched(n=self.batch_size_per_gpu):
            seqs, spans = [], []
            for _, context, continuation in batch:
                full = (context + continuation)[-(self.max_length + 1) :]
                inp = full[:-1]
                seqs.append(inp)
                spans.append((len(inp) - len(continuation), continuation))
            width = max(len(s) for s in seqs)
            tokens = torch.tensor(
                [s + [self.eot_token_id] * (width - len(s)) for s in seqs], device=self._device
            )
            with self.spliced():
                logits = self.model(tokens)  # right padding: causal attention never sees it
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for row, ((cache_key, _, _), (begin, continuation)) in enumerate(
                zip(batch, spans, strict=True)
            ):
                lp = logprobs[row, begin : begin + len(continuation)]
                target = torch.tensor(continuation, device=lp.device)
                answer = (
                    float(lp.gather(1, target[:, None]).sum()),
                    bool((lp.argmax(-1) == target).all()),
                )
                if cache_key is not None:
                    self.cache_hook.add_partial("loglikelihood", cache_key, answer)
                results.append(answer)
            bar.update(len(batch))
        bar.close()
        return collator.get_original(results)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        results = []
        for req in tqdm(
            requests,
            unit="requests",
            desc="loglikelihood_rolling (SAE spliced)",
            disable=disable_tqdm,
        ):
            (string,) = req.args
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            scores = self._loglikelihood_tokens(
                [(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True
            )
            total = sum(score for score, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            results.append(total)
        return results

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Batched by equal generation settings, left-padded, with the SAE spliced in at every
        step."""
        encoded = [(req.args[0], self.tok_encode(req.args[0]), req.args[1]) for req in requests]
        collator = Collator(
            encoded,
            sort_fn=lambda item: (-len(item[1]), item[0]),
            group_fn=lambda item: item[2],
            group_by="gen_kwargs",
        )
        eos = self.tok_decode([self.eot_token_id])
        results = []
        bar = tqdm(
            total=len(requests),
            unit="requests",
            desc="generate_until (SAE spliced)",
            disable=disable_tqdm,
        )
        for batch in collator.get_batched(n=self.batch_size_per_gpu):
            kwargs = dict(batch[0][2] or {})
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_new = int(kwargs.pop("max_gen_toks", kwargs.pop("max_new_tokens", 256)))
            do_sample = bool(kwargs.pop("do_sample", False))
            temperature = float(kwargs.pop("temperature", 1.0 if do_sample else 0.0))
            keep = max(1, self.max_length - max_new)
            ids = [tokens[-keep:] for _, tokens, _ in batch]
            width = max(len(t) for t in ids)
            pad = (
                self.tokenizer.pad_token_id
                if self.tokenizer.pad_token_id is not None
                else self.eot_token_id
            )
            tokens = torch.tensor([[pad] * (width - len(t)) + t for t in ids], device=self._device)
            with self.spliced():
                out = self.model.generate(
                    tokens,
                    max_new_tokens=max_new,
                    do_sample=do_sample and temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0,
                    stop_at_eos=True,
                    eos_token_id=self.eot_token_id,
                    use_past_kv_cache=True,
                    verbose=False,
                    padding_side="left",
                    prepend_bos=False,
                    return_type="tokens",
                )
            for row, (context, _, gen_kwargs) in enumerate(batch):
                text = self.tok_decode(out[row, width:].tolist())
                for stop in until:
                    if stop and stop in text:
                        text = text.split(stop)[0]
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
                results.append(text)
            bar.update(len(batch))
        bar.close()
        return collator.get_original(results)
