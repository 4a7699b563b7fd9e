"""Name -> factory registries. Entries are 'module:attribute' strings so heavy modules load only when used."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from llmlabel.errors import ConfigError, unknown


class Registry:
    """A named family of factories (backends, selectors, calibrators, ...).

    Give the entries when it is made (`Registry(kind, {name: "package.module:Class"})`), or register with
    `registry.add(name, "package.module:Class")` or the `@registry.register(name)` decorator; look up with
    `registry.get(name)`, which imports the target lazily.
    """

    def __init__(self, kind: str, entries: dict[str, str | Callable[..., Any]] | None = None):
        self.kind = kind
        self._entries: dict[str, str | Callable[..., Any]] = dict(entries or {})

    @classmethod
    def of_package(cls, kind: str, package: str, **classes: str) -> "Registry":
        """A registry whose every entry `name=Class` lives in `package.name` (one file per entry, named as it is
        registered): `Registry.of_package("backend", "llmlabel.backends", fake="FakeBackend")`."""
        return cls(kind, {name: f"{package}.{name}:{attr}" for name, attr in classes.items()})

    def add(self, name: str, target: str | Callable[..., Any]) -> None:
        """Register `target` (a callable or an import path 'module:attr') under `name`."""
        self._entries[name] = target

    def register(self, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of `add`."""

        def decorate(obj: Callable[..., Any]) -> Callable[..., Any]:
            self.add(name, obj)
            return obj

        return decorate

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> Callable[..., Any]:
        """Return the factory registered as `name`; an unknown name raises a one-line ConfigError."""
        if name not in self._entries:
            raise ConfigError(unknown(self.kind, name, self._entries))
        target = self._entries[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            self._entries[name] = target
        return target

    def checked(self, name: str, options: dict[str, Any], fixed: tuple[str, ...] = ()) -> Callable[..., Any]:
        """The factory registered as `name`, after checking that every key of `options` is one of its constructor
        parameters (other than `fixed`, which the caller passes itself); an unknown option raises a one-line
        ConfigError naming it and the closest valid one."""
        import inspect

        factory = self.get(name)
        valid = [p for p in inspect.signature(factory).parameters if p not in ("self", *fixed)]
        for option in options:
            if option not in valid:
                raise ConfigError(unknown(f"option for {self.kind} '{name}'", option, valid or ["(none)"]))
        return factory

    def __contains__(self, name: object) -> bool:
        return name in self._entries


#: Model backends (`llmlabel.backends.base.Backend` subclasses): `backend.name` in a recipe.
backends = Registry.of_package(
    "backend", "llmlabel.backends", fake="FakeBackend", transformers="TransformersBackend", vllm="VLLMBackend",
    openai="OpenAIBackend", chat="ChatBackend", decisions="DecisionsBackend", systemone="SystemOneBackend")

#: Recipe kinds: `kind:` in a recipe -> its class (a `llmlabel.kinds.base.RecipeKind` subclass with hooks).
recipe_kinds = Registry("recipe kind")
recipe_kinds.add("label", "llmlabel.kinds.label:Recipe")
recipe_kinds.add("tnt_llm", "llmlabel.kinds.tnt_llm:TntRecipe")
recipe_kinds.add("distill_student", "llmlabel.kinds.distill_student:DistillStudentRecipe")
recipe_kinds.add("weak_to_strong", "llmlabel.kinds.weak_to_strong:WeakToStrongRecipe")
recipe_kinds.add("symbol_tuning", "llmlabel.kinds.symbol_tuning:SymbolTuningRecipe")
recipe_kinds.add("audit", "llmlabel.kinds.audit:AuditRecipe")
recipe_kinds.add("estimate", "llmlabel.kinds.estimate:EstimateRecipe")

#: In-context exemplar selectors (`llmlabel.selection.base.Selector` subclasses).
selectors = Registry.of_package(
    "selector", "llmlabel.selection", random="RandomSelector", balanced="BalancedSelector", knn="KNNSelector",
    bm25="BM25Selector", mmr="MMRSelector", votek="VoteKSelector", epr="EPRSelector")

#: Calibrators (`llmlabel.calibration.base.Calibrator` subclasses); 'none' means no calibration.
calibrators = Registry.of_package(
    "calibration", "llmlabel.calibration", contextual="ContextualCalibrator", domain="DomainCalibrator",
    incontext="InContextCalibrator", batch="BatchCalibrator")

#: Lightweight text classifiers (`llmlabel.classifiers.base.TextClassifier`): baselines, retrieval priors, students.
classifiers = Registry.of_package(
    "classifier", "llmlabel.classifiers", knn_vote="KNNVoteClassifier",
    logreg_embeddings="LogRegEmbeddingsClassifier", logreg_tfidf="LogRegTfidfClassifier")

#: Labeling methods that use labeled data beyond the prompt (`llmlabel.methods.base.LabelingMethod`).
methods = Registry.of_package("method", "llmlabel.methods", knn_prompting="KNNPrompting", fusion="Fusion",
                              stacking="Stacking")

#: Where a recipe kind runs (`llmlabel.executors.base.Executor` subclasses): `executor:` in a recipe.
executors = Registry("executor")
executors.add("local", "llmlabel.executors.local:LocalExecutor")
executors.add("ray", "llmlabel.executors.ray:RayExecutor")
