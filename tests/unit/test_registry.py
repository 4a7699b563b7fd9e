"""The name -> factory registries (`llmlabel.registry`): lazy lookups, one-line errors, every entry importable."""

from __future__ import annotations

import pytest

from llmlabel.errors import ConfigError
from llmlabel.registry import Registry


def test_every_registered_entry_imports():
    import llmlabel.registry as registry
    import llmlabel.taxonomy as taxonomy

    families = [registry.backends, registry.recipe_kinds, registry.selectors, registry.calibrators,
                registry.classifiers, registry.methods, registry.executors, taxonomy.induction_methods,
                taxonomy.students]
    for family in families:
        assert family.names(), family.kind
        for name in family.names():
            assert callable(family.get(name)), (family.kind, name)
    # one registry per name: the taxonomy's are not a second "methods" / "classifier"
    kinds = [family.kind for family in families]
    assert len(set(kinds)) == len(kinds), kinds


def test_of_package_names_one_module_per_entry_and_loads_lazily():
    family = Registry.of_package("widget", "llmlabel.classifiers", knn_vote="KNNVoteClassifier")
    assert family._entries == {"knn_vote": "llmlabel.classifiers.knn_vote:KNNVoteClassifier"}
    from llmlabel.classifiers.knn_vote import KNNVoteClassifier

    assert family.get("knn_vote") is KNNVoteClassifier and "knn_vote" in family and "knn" not in family


def test_unknown_names_and_options_are_one_line_errors():
    family = Registry("widget", {"alpha": lambda size=1: size})
    with pytest.raises(ConfigError, match=r"^unknown widget 'alpah' \(did you mean 'alpha'\?\)"):
        family.get("alpah")
    with pytest.raises(ConfigError, match=r"^unknown option for widget 'alpha' 'sise' \(did you mean 'size'\?\)"):
        family.checked("alpha", {"sise": 2})
    assert family.checked("alpha", {"size": 2})(size=2) == 2


def test_register_decorator_and_add():
    family = Registry("widget")

    @family.register("beta")
    def beta():
        return "b"

    family.add("gamma", "llmlabel.registry:Registry")
    assert family.names() == ["beta", "gamma"] and family.get("beta") is beta and family.get("gamma") is Registry
