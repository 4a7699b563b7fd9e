"""A taxonomy given by a person: `taxonomy.labels` in the recipe, or a taxonomy YAML (`taxonomy.path`, e.g. one written
by an earlier run and edited by hand). Phase 1 makes no LLM call; phase 2 runs as for an induced taxonomy."""

from __future__ import annotations

from pathlib import Path

from llmlabel.errors import ConfigError
from llmlabel.taxonomy.base import Induced, InductionContext, TaxonomyMethod
from llmlabel.taxonomy.model import Step, Taxonomy


class GivenMethod(TaxonomyMethod):
    """Read the taxonomy from the recipe or a YAML file."""

    needs_llm = False

    def induce(self, texts: list[str], ctx: InductionContext, max_labels: int, step_prefix: str = "") -> Induced:
        """The given taxonomy (texts are not used)."""
        config = ctx.config
        if config.path:
            path = Path(config.path).expanduser()
            taxonomy = Taxonomy.load(path if path.is_absolute() else ctx.base_dir / path)
            source = f"read from {config.path}"
        elif config.labels:
            taxonomy = Taxonomy.from_data({"labels": config.labels}, "taxonomy.labels")
            source = "given in the recipe"
        else:
            raise ConfigError("taxonomy.method 'given' needs taxonomy.labels or taxonomy.path")
        taxonomy = taxonomy.model_copy(update={
            "method": "given", "use_case": taxonomy.use_case or config.use_case,
            "history": [*taxonomy.history, Step(step="given", reason=source, labels=taxonomy.names)]})
        return Induced(taxonomy)
