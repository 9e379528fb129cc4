"""Developers' tools, apart from the learner's ``kb``: ``python -m devtools.mutate`` (``make mutate``)
and ``python -m devtools.bench`` (``make bench``)."""
