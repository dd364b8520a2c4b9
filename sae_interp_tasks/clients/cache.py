"""The on-disk cache of LLM answers: one sqlite file per cache folder, WAL, one commit per answer.

Keyed by `caching.cache_key` of everything that decides an answer (client name, base_url,
messages, sampling parameters), so a rerun pays nothing for what it already has. Only successes are
stored; failures are asked again. Nothing secret enters a key or a row: clients name their
endpoint, never their API key.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path

from sae_interp_tasks.caching import cache_key
from sae_interp_tasks.clients.records import Completion, Prompt, Reading

CACHE_FILE = "completions.sqlite"


class CompletionCache:
    def __init__(self, cache_dir: Path):
        self.path = Path(cache_dir) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # answers arrive on the asyncio thread, lookups come from the caller's: one connection, one
        # lock
        self._db = sqlite3.connect(
            self.path, timeout=60, check_same_thread=False, isolation_level=None
        )
        self._setup()

    def _setup(self, attempts: int = 100) -> None:
        """WAL mode and the tables. Several processes (ranks of one run) may open a new cache at
        once, and switching the journal mode does not wait for another connection's lock: retry it
        a while."""
        for attempt in range(attempts):
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, value TEXT NOT "
                    "NULL)"
                )
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS logprobs (key TEXT PRIMARY KEY, value REAL NOT "
                    "NULL)"
                )
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS readings (key TEXT PRIMARY KEY, value TEXT NOT "
                    "NULL)"
                )
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (1 + attempt % 10))

    @staticmethod
    def key(client_name: str, base_url: str | None, prompt: Prompt) -> str:
        # top_logprobs means nothing without logprobs
        top_k = prompt.top_logprobs if prompt.logprobs else 0
        fields = [
            client_name,
            base_url,
            [list(m) for m in prompt.messages],
            prompt.max_tokens,
            float(prompt.temperature),
            bool(prompt.logprobs),
            top_k,
        ]
        if prompt.prefill:
            fields.append(prompt.prefill)
        if prompt.choice_list:
            fields.append({"choice_list": prompt.choice_list})
        if prompt.choice_one:
            fields.append({"choice_one": prompt.choice_one})
        return cache_key(*fields, length=64)

    @staticmethod
    def logprob_key(
        client_name: str, base_url: str | None, prefix: str, context: str, target: str
    ) -> str:
        return cache_key(client_name, base_url, "logprob", prefix, context, target, length=64)

    @staticmethod
    def reading_key(
        client_name: str,
        base_url: str | None,
        prefix: str,
        text: str,
        choices: tuple[str, ...],
        at: tuple[int, ...],
    ) -> str:
        return cache_key(
            client_name, base_url, "reading", prefix, text, list(choices), list(at), length=64
        )

    def get_readings(self, keys: list[str]) -> dict[str, Reading]:
        found = {}
        for key, value in self._rows("readings", keys):
            data = json.loads(value)
            found[key] = Reading(
                offsets=data["offsets"],
                logprobs=data["logprobs"],
                choices=data.get("choices"),
                cached=True,
            )
        return found

    def put_reading(self, key: str, reading: Reading) -> None:
        value = json.dumps(
            {"offsets": reading.offsets, "logprobs": reading.logprobs, "choices": reading.choices}
        )
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO readings (key, value) VALUES (?, ?)", (key, value)
            )

    def _rows(self, table: str, keys: list[str]) -> list[tuple[str, object]]:
        unique = list(dict.fromkeys(keys))
        out = []
        with self._lock:
            for start in range(0, len(unique), 500):  # stay under sqlite's bound-parameter limit
                chunk = unique[start : start + 500]
                out += self._db.execute(
                    f"SELECT key, value FROM {table} WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
        return out

    def get_many(self, keys: list[str]) -> dict[str, Completion]:
        found: dict[str, Completion] = {}
        for key, value in self._rows("completions", keys):
            data = json.loads(value)
            found[key] = Completion(
                text=data["text"],
                top_logprobs=data.get("top_logprobs"),
                choice_probs=data.get("choice_probs"),
                cached=True,
            )
        return found

    def get_logprobs(self, keys: list[str]) -> dict[str, float]:
        return {key: float(value) for key, value in self._rows("logprobs", keys)}

    def put_logprob(self, key: str, value: float) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO logprobs (key, value) VALUES (?, ?)", (key, float(value))
            )

    def put(self, key: str, completion: Completion) -> None:
        row = {"text": completion.text, "top_logprobs": completion.top_logprobs}
        if completion.choice_probs is not None:
            row["choice_probs"] = completion.choice_probs
        value = json.dumps(row, ensure_ascii=False)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO completions (key, value) VALUES (?, ?)", (key, value)
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
