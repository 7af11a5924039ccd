"""pytest setup shared by the test modules: the hypothesis profile `make mutate` selects."""

from __future__ import annotations

from hypothesis import settings

# `make mutate` runs the tests once per mutant: the same examples every time (a fixed seed, no example database
# carried from one mutant to the next), so a mutant's verdict does not depend on which mutants ran before it.
settings.register_profile("mutation", derandomize=True, database=None)
