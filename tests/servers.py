"""Real HTTP servers on 127.0.0.1 for the client tests, each in its own process.

- `transformers serve DIR --device cpu` serves the bundled model as an OpenAI-compatible
  endpoint (it answers chat completions, without logprobs).
- A fault-injecting proxy in front of it (FastAPI + uvicorn, run as `python tests/servers.py
  proxy --upstream URL --port N`). Faults are planned by request number: POST /_proxy/plan with
  {"faults": {"0": "500", "3": "hang", ...}} resets the count; unplanned requests are forwarded.
  GET /_proxy/stats reports what each request got, and a sha256 of the Authorization header seen
  (so tests can check the key was sent without the proxy ever echoing it).
"""

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FAULTS = ("500", "429", "401", "empty_choices", "non_json", "bad_json", "hang")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    url: str  # http://127.0.0.1:PORT
    log_path: Path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _wait_healthy(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        try:
            with urllib.request.urlopen(server.url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise TimeoutError(
        f"server at {server.url} not healthy after {timeout:.0f}s:\n{server.log_tail()}"
    )


def stop(server: Server, grace: float = 10.0) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(grace)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(grace)


@contextlib.contextmanager
def _running(
    cmd: list[str], log_path: Path, port: int, env: dict, startup_timeout: float
) -> Iterator[Server]:
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    server = Server(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_healthy(server, startup_timeout)
        yield server
    finally:
        stop(server)


def transformers_serve(model_dir: Path, workdir: Path, startup_timeout: float = 180.0):
    """`transformers serve` pinned to `model_dir`; requests must name that same path as their
    model."""
    exe = shutil.which("transformers", path=str(Path(sys.executable).parent)) or shutil.which(
        "transformers"
    )
    if exe is None:
        raise RuntimeError("the `transformers` CLI is not installed next to this Python")
    port = free_port()
    hub_cache = workdir / "hf_hub_cache"
    hub_cache.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hub_cache), TRANSFORMERS_VERBOSITY="error"
    )
    cmd = [
        exe,
        "serve",
        str(model_dir),
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return _running(cmd, workdir / "transformers_serve.log", port, env, startup_timeout)


def fault_proxy(upstream: str, workdir: Path, startup_timeout: float = 60.0):
    port = free_port()
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "proxy",
        "--upstream",
        upstream,
        "--port",
        str(port),
    ]
    return _running(cmd, workdir / "fault_proxy.log", port, dict(os.environ), startup_timeout)


def post_json(url: str, payload: dict, timeout: float = 10.0) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get_json(url: str, timeout: float = 10.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


# ---------------------------------------------------------------- the proxy process


def proxy_app(upstream: str):
    import asyncio

    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response

    app = FastAPI()
    state: dict = {
        "faults": {},
        "count": 0,
        "outcomes": [],
        "auth_sha256": [],
        "reject_logprobs": False,
        "hang_s": 60.0,
    }

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.post("/_proxy/plan")
    async def plan(body: dict):
        unknown = set(body.get("faults", {}).values()) - set(FAULTS)
        if unknown:
            return JSONResponse(
                {"error": f"unknown faults {sorted(unknown)}; known: {FAULTS}"}, 400
            )
        state.update(
            faults={int(k): v for k, v in body.get("faults", {}).items()},
            count=0,
            outcomes=[],
            auth_sha256=[],
            reject_logprobs=bool(body.get("reject_logprobs", False)),
            hang_s=float(body.get("hang_s", 60.0)),
        )
        return {"ok": True}

    @app.get("/_proxy/stats")
    async def stats():
        return {
            "count": state["count"],
            "outcomes": state["outcomes"],
            "auth_sha256": state["auth_sha256"],
        }

    def forward(body: bytes, headers: dict) -> tuple[int, bytes, str]:
        request = urllib.request.Request(
            upstream + "/v1/chat/completions", data=body, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                return (
                    response.status,
                    response.read(),
                    response.headers.get("content-type", "application/json"),
                )
        except urllib.error.HTTPError as err:
            return err.code, err.read(), err.headers.get("content-type", "application/json")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.body()
        number = state["count"]
        state["count"] += 1
        state["auth_sha256"].append(
            hashlib.sha256(request.headers.get("authorization", "").encode()).hexdigest()
        )
        fault = state["faults"].get(number, "forward")
        if fault == "forward" and state["reject_logprobs"] and json.loads(body).get("logprobs"):
            fault = "reject_logprobs"
        state["outcomes"].append(fault)
        if fault == "500":
            return JSONResponse({"error": {"message": "injected server error"}}, 500)
        if fault == "429":
            return JSONResponse(
                {"error": {"message": "injected rate limit"}}, 429, headers={"retry-after": "0"}
            )
        if fault == "401":
            return JSONResponse({"error": {"message": "Incorrect API key provided"}}, 401)
        if fault == "empty_choices":
            return JSONResponse(
                {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}
            )
        if fault == "non_json":
            return Response("<html><body>upstream hiccup</body></html>", media_type="text/html")
        if fault == "bad_json":
            return Response('{"id": "x", "choices": [', media_type="application/json")
        if fault == "hang":  # until the client gives up (or hang_s passes)
            deadline = time.monotonic() + state["hang_s"]
            while time.monotonic() < deadline and not await request.is_disconnected():
                await asyncio.sleep(0.2)
            return JSONResponse({"error": {"message": "hung on purpose"}}, 504)
        if fault == "reject_logprobs":
            return JSONResponse(
                {
                    "error": {
                        "message": "logprobs is not supported by this endpoint",
                        "type": "invalid_request_error",
                    }
                },
                400,
            )
        headers = {"Content-Type": "application/json"}
        status, content, content_type = await asyncio.to_thread(forward, body, headers)
        return Response(content, status_code=status, media_type=content_type.split(";")[0])

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    proxy = sub.add_parser("proxy")
    proxy.add_argument("--upstream", required=True)
    proxy.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(
        proxy_app(args.upstream.rstrip("/")),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
