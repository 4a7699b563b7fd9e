"""In-context exemplar selection: a `Selector` is fit once on a labeled pool, then `select(query, k)`."""
