"""Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp's server, OpenRouter, `transformers
serve`).

Async with at most `max_concurrency` requests in flight; our own retries (the openai library's
are off) with exponential backoff and jitter on 429, 5xx, timeouts, connection errors and
malformed bodies. Logprobs are asked for when a prompt wants them, until the endpoint shows it
does not give them. The API key is read from the environment variable the config names, and
is scrubbed from every error text we keep or log.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import threading
from urllib.parse import urlparse

import openai

from sae_interp_tasks.clients.base import LLMClient, OnAnswer
from sae_interp_tasks.clients.cache import CompletionCache
from sae_interp_tasks.clients.openai_responses import (
    ConfigProblem,
    MalformedResponse,
    reading_from,
    target_logprob,
)
from sae_interp_tasks.clients.openai_responses import (
    top_logprobs as read_top_logprobs,
)
from sae_interp_tasks.clients.records import ClientConfig, Completion, Prompt, Reading
from sae_interp_tasks.errors import SaeInterpError

log = logging.getLogger(__name__)

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


class OpenAIClient(LLMClient):
    # backoff: delay = min(backoff_cap, backoff_base * 2**attempt) * uniform(0.5, 1), and a 429's
    # Retry-After when longer; a prompt gives up early once its waits would pass max_total_wait.
    # Class attributes, so tests (and impatient users) can shorten them.
    backoff_base: float = 1.0
    backoff_cap: float = 30.0
    max_total_wait: float = 300.0

    def __init__(self, cfg: ClientConfig, cache: CompletionCache):
        super().__init__(cfg, cache)
        self.name = f"openai:{cfg.model}@{cfg.base_url or 'default'}"
        self.supports_logprobs = True  # until the endpoint shows otherwise
        self.n_retries = 0  # re-asks after a retryable failure
        if not os.environ.get(cfg.api_key_env):
            # the OpenAI API itself (the library's default URL): no chance without a key
            if cfg.base_url is None and not os.environ.get("OPENAI_BASE_URL"):
                raise SaeInterpError(
                    "no API key for the OpenAI API: set the environment variable "
                    f"{cfg.api_key_env} "
                    "(or name another one with api_key_env=..., or point base_url at your endpoint)"
                )
            if not _is_local(cfg.base_url):
                log.warning(
                    "%s: the environment variable %s is not set; asking without a key",
                    self.name,
                    cfg.api_key_env,
                )

    # ---- the secret stays in the environment; every text we keep goes through _scrub
    def _api_key(self) -> str:
        return os.environ.get(self.cfg.api_key_env) or "EMPTY"

    def _scrub(self, text: str) -> str:
        key = os.environ.get(self.cfg.api_key_env)
        return text.replace(key, "***") if key else text

    # ---- sync entry points
    def _answer(self, prompts: list[Prompt], on_answer: OnAnswer) -> None:
        self._run(
            lambda client, semaphore, retry_lock, p: self._ask(client, semaphore, p, retry_lock),
            prompts,
            on_answer,
            lambda error: Completion(text=None, error=error),
        )

    def _logprobs(self, prefix: str, pairs: list[tuple[str, str]], on_answer) -> None:
        self._run(
            lambda client, semaphore, retry_lock, pair: self._ask_logprob(
                client, semaphore, prefix, pair, retry_lock
            ),
            pairs,
            on_answer,
            lambda error: None,
        )

    def _run(self, ask, items: list, on_answer, failed) -> None:
        def coro_fn():
            return self._ask_all(ask, items, on_answer, failed)

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(coro_fn())
            return
        # called from inside a running loop (a notebook, an async harness): run ours on a thread
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sae-interp-llm") as pool:
            pool.submit(asyncio.run, coro_fn()).result()

    async def _ask_all(self, ask, items: list, on_answer, failed) -> None:
        semaphore = asyncio.Semaphore(self.cfg.max_concurrency)
        retry_lock = threading.Lock()
        problems: list[str] = []
        client = openai.AsyncOpenAI(
            base_url=self.cfg.base_url,
            api_key=self._api_key(),
            max_retries=0,
            timeout=self.cfg.timeout,
        )

        async def one(i: int, item) -> None:
            try:
                answer = await ask(client, semaphore, retry_lock, item)
            except ConfigProblem as problem:
                problems.append(str(problem))
                answer = failed(str(problem))
            on_answer(i, answer)

        try:
            await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
        finally:
            await client.close()
        if problems:
            raise SaeInterpError(f"{self.name} refused the requests: {problems[0]}")

    async def _ask(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        prompt: Prompt,
        retry_lock: threading.Lock,
    ) -> Completion:
        state = {}

        async def attempt() -> Completion:
            async with semaphore:
                # decided after the wait: an answer that arrived meanwhile may have shown logprobs
                # unsupported
                state["logprobs"] = prompt.logprobs and self.supports_logprobs
                self._count_call()
                response = await client.chat.completions.create(
                    **self._request(prompt, state["logprobs"])
                )
            completion = self._parse(response, state["logprobs"])
            self._count_usage(response)
            return completion

        def retry_now(err) -> bool:
            if state.get("logprobs") and "logprob" in self._describe(err).lower():
                log.info("%s rejects logprobs; asking without them from now on", self.name)
                self.supports_logprobs = False
                return True  # not the prompt's fault: ask again at once, without logprobs
            return False

        return await self._retrying(
            attempt, retry_now, retry_lock, lambda error: Completion(text=None, error=error)
        )

    async def _ask_logprob(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        prefix: str,
        pair: tuple[str, str],
        retry_lock: threading.Lock,
    ) -> float | None:
        """log P(target | prefix + context) from /v1/completions with echo: the prompt's own
        logprobs."""
        context, target = pair
        text, begin = prefix + context + target, len(prefix + context)

        async def attempt() -> float:
            async with semaphore:
                self._count_call()
                response = await client.completions.create(
                    model=self.cfg.model,
                    prompt=text,
                    max_tokens=1,
                    temperature=0.0,
                    echo=True,
                    logprobs=1,
                )
            value = target_logprob(response, begin, len(text), self._no_prompt_logprobs())
            self._count_usage(response)
            return value

        return await self._retrying(
            attempt, lambda err: False, retry_lock, lambda error: None, logprob_request=True
        )

    def _read(
        self,
        prefix: str,
        items: list[tuple[str, tuple[int, ...]]],
        choices: tuple[str, ...],
        on_answer,
    ) -> None:
        self._run(
            lambda client, semaphore, retry_lock, item: self._ask_reading(
                client, semaphore, prefix, item, choices, retry_lock
            ),
            items,
            on_answer,
            lambda error: None,
        )

    async def _ask_reading(
        self,
        client: openai.AsyncOpenAI,
        semaphore: asyncio.Semaphore,
        prefix: str,
        item: tuple[str, tuple[int, ...]],
        choices: tuple[str, ...],
        retry_lock: threading.Lock,
    ) -> Reading | None:
        """The prompt's own token logprobs (and top alternatives) from /v1/completions with echo."""
        text, spots = item
        top = min(20, max(5, len(choices))) if choices else 1

        async def attempt() -> Reading:
            async with semaphore:
                self._count_call()
                response = await client.completions.create(
                    model=self.cfg.model,
                    prompt=prefix + text,
                    max_tokens=1,
                    temperature=0.0,
                    echo=True,
                    logprobs=top,
                )
            reading = reading_from(
                response,
                len(prefix),
                len(prefix + text),
                spots,
                choices,
                self._no_prompt_logprobs(),
            )
            self._count_usage(response)
            return reading

        return await self._retrying(
            attempt, lambda err: False, retry_lock, lambda error: None, logprob_request=True
        )

    def _count_usage(self, response) -> None:
        usage = getattr(response, "usage", None)
        if usage is not None:
            self._count_tokens(
                getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0
            )

    def _no_prompt_logprobs(self) -> str:
        return (
            f"the endpoint {self.cfg.base_url or 'default'} returns no prompt logprobs on "
            "/v1/completions "
            "(echo=true, logprobs=k), which the surprisal and simulation scorers need; serve the "
            "model with vLLM "
            "(or another server that echoes prompt logprobs), or use a scorer that needs none "
            "(intervention_scorers: "
            "[judge]; simulation_mode: json)"
        )

    async def _retrying(
        self, attempt, retry_now, retry_lock: threading.Lock, failed, logprob_request: bool = False
    ):
        """`attempt()` until it returns, with backoff on retryable failures; `failed(reason)` after
        the last."""
        tries, waited = 0, 0.0
        while True:
            retry_after = None
            try:
                return await attempt()
            except (openai.AuthenticationError, openai.NotFoundError) as err:
                hint = (
                    f"; {self._no_prompt_logprobs()}"
                    if logprob_request and isinstance(err, openai.NotFoundError)
                    else self._config_hint(err)
                )
                raise ConfigProblem(self._describe(err) + hint) from None
            except (openai.BadRequestError, openai.UnprocessableEntityError) as err:
                if retry_now(err):
                    continue
                if logprob_request and any(
                    w in self._describe(err).lower() for w in ("echo", "logprob")
                ):
                    raise ConfigProblem(
                        self._describe(err) + "; " + self._no_prompt_logprobs()
                    ) from None
                return failed(self._describe(err))
            except openai.RateLimitError as err:
                reason, retry_after = self._describe(err), _retry_after(err)
            except openai.APIStatusError as err:
                if err.status_code < 500:
                    return failed(self._describe(err))
                reason = self._describe(err)
            except (
                openai.APIConnectionError,
                openai.APIResponseValidationError,
                MalformedResponse,
            ) as err:
                reason = self._describe(err)
            except ValueError as err:  # a body that claims to be JSON but does not parse
                reason = f"MalformedResponse: unreadable body ({self._describe(err)})"
            delay = min(self.backoff_cap, self.backoff_base * 2**tries) * random.uniform(0.5, 1.0)
            if retry_after is not None:
                delay = min(self.backoff_cap, max(delay, retry_after))
            if tries >= self.cfg.max_retries or waited + delay > self.max_total_wait:
                log.debug("%s: giving up after %d attempts: %s", self.name, tries + 1, reason)
                return failed(f"{reason} (after {tries + 1} attempts)")
            log.debug("%s: %s; retry %d in %.2fs", self.name, reason, tries + 1, delay)
            with retry_lock:
                self.n_retries += 1
            await asyncio.sleep(delay)
            tries, waited = tries + 1, waited + delay

    def _request(self, prompt: Prompt, want_logprobs: bool) -> dict:
        request = dict(
            model=self.cfg.model,
            messages=[{"role": r, "content": c} for r, c in prompt.messages],
            max_tokens=prompt.max_tokens,
            temperature=prompt.temperature,
        )
        if want_logprobs:
            request.update(logprobs=True, top_logprobs=prompt.top_logprobs)
        return request

    def _parse(self, response, want_logprobs: bool) -> Completion:
        choices = getattr(response, "choices", None)  # a non-JSON body arrives as a plain str
        if not choices:
            raise MalformedResponse(f"no choices in the answer ({type(response).__name__})")
        message = getattr(choices[0], "message", None)
        text = getattr(message, "content", None)
        if not isinstance(text, str):
            raise MalformedResponse("the answer's first choice has no message content")
        top_logprobs = None
        if want_logprobs:
            top_logprobs = read_top_logprobs(choices[0])
            if top_logprobs is None:
                log.info("%s answered without logprobs; asking without them from now on", self.name)
                self.supports_logprobs = False
        return Completion(text=text, top_logprobs=top_logprobs)

    def _describe(self, err: Exception) -> str:
        status = getattr(err, "status_code", None)
        # the endpoint's own words; openai's message is just "Error code: N"
        body = getattr(err, "body", None)
        if isinstance(body, dict):
            body = body.get("message") or body.get("detail") or body
        message = " ".join(str(body if body else err).split())[:300]
        prefix = f"{type(err).__name__}" + (f" (HTTP {status})" if status else "")
        return self._scrub(f"{prefix}: {message}" if message else prefix)

    def _config_hint(self, err: Exception) -> str:
        if isinstance(err, openai.AuthenticationError):
            return f"; check the API key in the environment variable {self.cfg.api_key_env}"
        return f"; check the model name {self.cfg.model!r} and base_url {self.cfg.base_url!r}"


def _retry_after(err: openai.APIStatusError) -> float | None:
    try:
        value = float(err.response.headers.get("retry-after", ""))
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def _is_local(base_url: str | None) -> bool:
    if not base_url:
        return False
    return (urlparse(base_url).hostname or "") in _LOOPBACK
