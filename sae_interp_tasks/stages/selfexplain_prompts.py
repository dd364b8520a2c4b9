"""The self-explanation stage's settings and its prompt: a chat template holding a placeholder
token, rendered with the subject model's chat template, and the latents' unit directions that are
patched in at the placeholder (docs/methods.md, "Self-explanation")."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sae_interp_tasks.config import StageConfig, option, positive
from sae_interp_tasks.errors import SaeInterpError

DEFAULT_TEMPLATES = {
    "meaning": {
        "user": 'What is the meaning of the word "X"?',
        "assistant": 'The meaning of the word "X" is "',
        "placeholder": "X",
    },
    "neutral": {"user": '"<unk>"?', "assistant": ' "<unk>" "', "placeholder": "<unk>"},
    "repeat": {"user": 'Repeat "X" three times.', "assistant": '"X", "X", "', "placeholder": "X"},
    "in_context": {
        "user": 'What is "X" in the following examples?\n{examples}',
        "assistant": '"X" is "',
        "placeholder": "X",
    },
}


@dataclass(frozen=True)
class SelfExplainConfig(StageConfig):
    selfexplain_model: str | None = None  # None: the backend's subject model (must be chat-tuned)
    patch_layer: int = option(2, min=0)
    probe_layer: int | None = option(None, min=0)  # None: two thirds of the depth
    direction: str = option("decoder", choices=("decoder", "encoder"))
    templates: dict | None = option(DEFAULT_TEMPLATES)  # name -> {user, assistant, placeholder}
    use_templates: list = option(["meaning", "neutral", "repeat", "in_context"])
    explain_template: str = "meaning"  # whose top-scale generation is "the" self-explanation
    n_scales: int = positive(16)
    scale_min: float = 0.0
    scale_max: float = 4.0  # in units of the typical residual norm at the patch layer
    n_samples: int = positive(2)
    max_new_tokens: int = positive(12)
    # sampling temperature; 0 = greedy (then n_samples is 1)
    temperature: float = option(0.7, min=0.0)
    alpha: float = option(0.4, min=0.0, max=1.0)
    top_scales: int = positive(3)
    # peak self-similarity below this flags a self-explanation failure; None: calibrated per model,
    # layer and prompt as the null_quantile of the peaks of n_null_directions random unit directions
    min_selfsim: float | None = None
    n_null_directions: int = positive(32)
    null_quantile: float = option(0.95, above=0.0, below=1.0)
    n_context_examples: int = positive(5)  # in_context template: top windows shown
    selfexplain_batch_size: int = positive(64)  # (latent, scale) rows per batch

    def check(self) -> None:
        names = set(self.template_map())
        for name in list(self.use_templates) + [self.explain_template]:
            if name not in names:
                raise SaeInterpError(
                    f"unknown self-explanation template {name!r}; defined: "
                    f"{', '.join(sorted(names))}"
                )

    def template_map(self) -> dict:
        return dict(self.templates) if self.templates else dict(DEFAULT_TEMPLATES)


@dataclass(frozen=True)
class PromptIds:
    tokens: torch.Tensor  # [T]
    positions: list[int]  # placeholder positions


def render_prompt(
    tokenizer, template: dict, examples_text: str = "", n_inserted: int = 0
) -> PromptIds:
    """The chat prompt of a template, tokenized, with the placeholder positions.

    The model must have a chat template: a self-explanation prompt in a format the model was
    not tuned on is an error, not a silent fallback.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise SaeInterpError(
            f"the self-explanation model's tokenizer ({getattr(tokenizer, 'name_or_path', '?')}) "
            "has no chat "
            "template; set selfexplain_model (or model=) to an instruction-tuned model"
        )
    placeholder = template.get("placeholder", "X")
    if placeholder == "<unk>":
        placeholder = tokenizer.unk_token or tokenizer.eos_token
    user = template["user"].replace("<unk>", placeholder).replace("{examples}", examples_text)
    assistant = template["assistant"].replace("<unk>", placeholder)
    text = (
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
        + assistant
    )
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    target = tokenizer(placeholder, add_special_tokens=False).input_ids
    if len(target) != 1:
        raise SaeInterpError(
            f"placeholder {placeholder!r} is {len(target)} tokens; choose a single-token "
            "placeholder"
        )
    positions = (ids == target[0]).nonzero().flatten().tolist()
    # placeholders the template itself holds, plus those inserted into the examples text; other
    # occurrences of the string in corpus text (e.g. "X" inside "XML") are not ours to count
    expected = (
        template["user"].replace("<unk>", placeholder).replace("{examples}", "").count(placeholder)
        + assistant.count(placeholder)
        + n_inserted
    )
    if len(positions) < expected or not positions:
        raise SaeInterpError(
            f"placeholder {placeholder!r} merges with its neighbours in the template "
            f"{template['user']!r}; change the template or the placeholder"
        )
    return PromptIds(ids, positions)


def unit_directions(sae, latents: list[int], which: str) -> torch.Tensor:
    w = sae.W_dec[latents] if which == "decoder" else sae.W_enc[:, latents].T
    return F.normalize(w.detach().float(), dim=-1)
