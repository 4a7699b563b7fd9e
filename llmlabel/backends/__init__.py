"""Model backends: one small interface (`Backend`), one file per engine, registered in `llmlabel.registry`."""

from llmlabel.backends.base import Backend, load_backend

__all__ = ["Backend", "load_backend"]
