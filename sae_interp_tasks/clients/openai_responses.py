"""Reading an OpenAI-compatible endpoint's answers: the chat completion's text and top logprobs,
and the prompt logprobs a completions endpoint echoes (which the surprisal and simulation scorers
read). A body we cannot read is `MalformedResponse` (retried); an endpoint that gives no prompt
logprobs at all is `ConfigProblem` (the run stops with `missing`, the message naming the fix)."""

from __future__ import annotations

from sae_interp_tasks.clients.records import Reading


class MalformedResponse(Exception):
    """A 200 answer we cannot read: no choices, no message content, or not a chat completion at
    all."""


class ConfigProblem(Exception):
    """The endpoint refuses every request alike (bad key, wrong model or URL): stop and tell the
    user."""


def reading_from(
    response,
    begin: int,
    end: int,
    spots: tuple[int, ...],
    choices: tuple[str, ...],
    missing: str,
) -> Reading:
    lp = prompt_logprobs(response, missing)
    rows = [
        (off - begin, v, alts)
        for off, v, alts in zip(
            lp.text_offset,
            lp.token_logprobs,
            lp.top_logprobs or [None] * len(lp.text_offset),
            strict=False,
        )
        if begin <= off < end
    ]
    if not rows or any(v is None for _, v, _ in rows):
        raise ConfigProblem(missing)
    found = []
    for spot in spots:
        alts = next((a for off, _, a in rows if off == spot), None) or {}
        found.append({c: float(alts[c]) for c in choices if c in alts})
    return Reading(
        offsets=[off for off, _, _ in rows],
        logprobs=[float(v) for _, v, _ in rows],
        choices=found if spots else None,
    )


def prompt_logprobs(response, missing: str):
    """The echoed prompt logprobs of a completions answer."""
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedResponse(f"no choices in the answer ({type(response).__name__})")
    lp = getattr(choices[0], "logprobs", None)
    if (
        lp is None
        or not getattr(lp, "token_logprobs", None)
        or not getattr(lp, "text_offset", None)
    ):
        raise ConfigProblem(missing)
    return lp


def target_logprob(response, begin: int, end: int, missing: str) -> float:
    choices = getattr(response, "choices", None)
    if not choices:
        raise MalformedResponse(f"no choices in the answer ({type(response).__name__})")
    lp = getattr(choices[0], "logprobs", None)
    tokens = getattr(lp, "token_logprobs", None) if lp is not None else None
    offsets = getattr(lp, "text_offset", None) if lp is not None else None
    if not tokens or not offsets or all(v is None for v in tokens[1:]):
        raise ConfigProblem(missing)
    picked = [v for v, off in zip(tokens, offsets, strict=False) if begin <= off < end]
    if not picked or any(v is None for v in picked):
        raise ConfigProblem(missing)
    return float(sum(picked))


def top_logprobs(choice) -> list[dict[str, float]] | None:
    """Per generated token, {token: logprob} of its top alternatives (the chosen token included)."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    per_token = []
    for token in content:
        alternatives: dict[str, float] = {}
        for alt in getattr(token, "top_logprobs", None) or []:
            alternatives[alt.token] = max(alt.logprob, alternatives.get(alt.token, float("-inf")))
        if not alternatives and getattr(token, "token", None) is not None:
            alternatives[token.token] = token.logprob
        per_token.append(alternatives)
    return per_token
