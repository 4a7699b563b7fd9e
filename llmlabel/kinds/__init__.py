"""Recipe kinds: one class per `kind:` of a recipe, all `llmlabel.kinds.base.RecipeKind` subclasses run by an
executor with one `RunContext` (label, tnt_llm, distill_student, weak_to_strong, symbol_tuning, audit, estimate).
A new kind is one file here that overrides the hooks, plus one line in `llmlabel.registry.recipe_kinds`."""
