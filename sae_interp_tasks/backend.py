"""The `sae` model backend: the SAE under evaluation plus the subject model it reads from.

It serves the `interpret` request type of this package's tasks (all tasks of a run hand
their requests over together, so one activation pass and one set of explanations serve
them all), and `loglikelihood`, `loglikelihood_rolling`, `generate_until` with the SAE
spliced into the subject model, so any stock harness task measures what splicing costs.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from tqdm.auto import tqdm

from sae_interp_tasks.errors import SaeInterpError
from sae_interp_tasks.saes import SAESource, load_sae
from sae_interp_tasks.subject import check_hook, load_subject

log = logging.getLogger(__name__)

MODEL_ARGS = ("release", "sae_id", "path", "model", "device", "dtype", "batch_size", "max_batch_size",
              "control", "control_k", "max_length")

# request kind -> "module:function" serving it; a handler takes (backend, [payload]) -> [response]
HANDLERS = {
    "core": "sae_interp_tasks.tasks:serve_core",
    "detection": "sae_interp_tasks.pipeline:serve_interp",
    "fuzzing": "sae_interp_tasks.pipeline:serve_interp",
    "embedding": "sae_interp_tasks.pipeline:serve_interp",
    "selfexplain": "sae_interp_tasks.pipeline:serve_interp",
}


def _resolve_device(device: str | None) -> str:
    if device in (None, "", "auto") or (str(device).startswith("cuda") and not torch.cuda.is_available()):
        chosen = "cuda" if torch.cuda.is_available() else "cpu"
        if device and device != chosen:
            log.warning("device %s is not available; using %s", device, chosen)
        return chosen
    return str(device)


class SAEBackend(TemplateLM):
    """`--model sae --model_args release=R,sae_id=I` | `path=DIR` | (nothing: the offline demo)."""

    def __init__(self, release: str | None = None, sae_id: str | None = None, path: str | None = None,
                 model: str | None = None, device: str | None = None, dtype: str = "float32",
                 batch_size: int | str = 8, max_batch_size: int | None = None, control: str | None = None,
                 control_k: int | None = None, max_length: int | None = None, **unknown_args):
        super().__init__()
        if unknown_args:
            raise SaeInterpError(f"unknown --model_args {', '.join(sorted(unknown_args))} for --model sae; "
                                 f"valid: {', '.join(MODEL_ARGS)}")
        if path and release:
            raise SaeInterpError("give either release=...,sae_id=... or path=..., not both")
        if sae_id and not release:
            raise SaeInterpError("sae_id needs release=... (or use path=DIR for an SAE on disk)")
        self._device = _resolve_device(device)
        self.batch_size_per_gpu = 8 if str(batch_size).startswith("auto") else int(batch_size)
        if self.batch_size_per_gpu <= 0:
            raise SaeInterpError(f"batch_size must be positive, got {batch_size}")
        self.source = SAESource(release=release, sae_id=sae_id, path=path, control=control,
                                control_k=int(control_k) if control_k else None)
        self.sae, self.info = load_sae(self.source, device=self._device, dtype=dtype)
        override = model is not None
        self.subject_name = model or self.info.model_name  # what get_model_info records
        self.model = load_subject(model or self.info.model_name, device=self._device, dtype=dtype,
                                  from_pretrained_kwargs=None if override else self.info.model_from_pretrained_kwargs)
        check_hook(self.model, self.info.hook_name)
        self._check_width()
        self._max_length = int(max_length) if max_length else min(self.model.cfg.n_ctx, 2048)
        self.memo: dict = {}  # per-run shared work: activation passes, explanations, ...
        log.info("sae backend: %s on %s, hook %s (d_sae=%d)", self.info.label, self.info.model_name,
                 self.info.hook_name, self.info.d_sae)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        from lm_eval.utils import simple_parse_args_string

        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None):
        # --model_args win over the harness's generic flags (--batch_size, --device)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    def _check_width(self) -> None:
        probe = torch.tensor([[self.tokenizer.bos_token_id or 0, 1]], device=self._device)
        from sae_interp_tasks.activations import hook_activations

        width = hook_activations(self.model, self.info.hook_name, probe).shape[-1]
        if width != self.info.d_in:
            raise SaeInterpError(f"the SAE reads {self.info.d_in}-wide activations but {self.info.hook_name} of "
                                 f"{self.model.cfg.model_name} is {width}-wide; pick the subject model the SAE was trained on")

    def get_model_info(self) -> dict:
        """Facts about the SAE under evaluation; lm-eval merges them into results["config"], where
        `sae-interp leaderboard` / `compare` read the SAE's identity and width."""
        return {"sae": self.info.label, "sae_fingerprint": self.info.fingerprint, "sae_d_sae": int(self.info.d_sae),
                "sae_d_in": int(self.info.d_in), "sae_architecture": self.info.architecture,
                "sae_hook_name": self.info.hook_name, "subject_model": self.subject_name,
                "sae_control": self.source.control}

    # --- the package's own request type ----------------------------------------------------------
    def interpret(self, requests) -> list:
        payloads = [json.loads(req.args[0]) for req in requests]
        # one call per handler, all its kinds together: tasks that share a latent selection or
        # explanations must be seen at once (e.g. detection and fuzzing on the same slots)
        by_handler: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(payloads):
            by_handler[HANDLERS[p["kind"]]].append(i)
        results: list = [None] * len(requests)
        for target, indices in by_handler.items():
            module, _, fn = target.partition(":")
            handler = getattr(__import__(module, fromlist=[fn]), fn)
            for i, out in zip(indices, handler(self, [payloads[i] for i in indices]), strict=True):
                results[i] = out
        return results

    # --- the SAE spliced into the subject model ------------------------------------------------------
    def _splice(self, x, hook):
        return self.sae.decode(self.sae.encode(x.to(self.sae.W_dec.dtype))).to(x.dtype)

    def spliced(self):
        """Context manager: the subject model with the SAE's reconstruction in place of the hooked activation."""
        return self.model.hooks(fwd_hooks=[(self.info.hook_name, self._splice)])

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "")).replace("/", "__")

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def device(self):
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=False)

    def tok_decode(self, tokens) -> str:
        return self.tokenizer.decode(tokens)

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
        # longest first, so a batch pads little and memory peaks early
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        out: list = [None] * len(requests)
        bar = tqdm(total=len(requests), unit="requests", desc="loglikelihood (SAE spliced)", disable=disable_tqdm)
        for start in range(0, len(order), self.batch_size_per_gpu):
            idx = order[start:start + self.batch_size_per_gpu]
            seqs, spans = [], []
            for i in idx:
                _, context, continuation = requests[i]
                full = (context + continuation)[-(self.max_length + 1):]
                inp = full[:-1]
                seqs.append(inp)
                spans.append((len(inp) - len(continuation), continuation))
            width = max(len(s) for s in seqs)
            pad = self.eot_token_id
            batch = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self._device)
            with self.spliced():
                logits = self.model(batch)  # right padding: causal attention never sees it
            logprobs = F.log_softmax(logits.float(), dim=-1)
            for row, i in enumerate(idx):
                begin, continuation = spans[row]
                lp = logprobs[row, begin:begin + len(continuation)]
                target = torch.tensor(continuation, device=lp.device)
                total = float(lp.gather(1, target[:, None]).sum())
                greedy = bool((lp.argmax(-1) == target).all())
                out[i] = (total, greedy)
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], (total, greedy))
            bar.update(len(idx))
        bar.close()
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        results = []
        for req in tqdm(requests, unit="requests", desc="loglikelihood_rolling (SAE spliced)", disable=disable_tqdm):
            (string,) = req.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length, context_len=1)]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows], disable_tqdm=True)
            total = sum(score for score, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            results.append(total)
        return results

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results = []
        for req in tqdm(requests, unit="requests", desc="generate_until (SAE spliced)", disable=disable_tqdm):
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(gen_kwargs.pop("max_gen_toks", gen_kwargs.pop("max_new_tokens", 256)))
            do_sample = bool(gen_kwargs.pop("do_sample", False))
            temperature = float(gen_kwargs.pop("temperature", 1.0 if do_sample else 0.0))
            ids = self.tok_encode(context)[-(self.max_length - max_new):] if max_new < self.max_length else self.tok_encode(context)
            tokens = torch.tensor([ids], device=self._device)
            with self.spliced():
                generated = self.model.generate(
                    tokens, max_new_tokens=max_new, do_sample=do_sample and temperature > 0,
                    temperature=temperature if temperature > 0 else 1.0, stop_at_eos=True,
                    eos_token_id=self.eot_token_id, use_past_kv_cache=True, verbose=False)
            text = self.tok_decode(generated[0, tokens.shape[1]:].tolist())
            for stop in until:
                if stop and stop in text:
                    text = text.split(stop)[0]
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
            results.append(text)
        return results
