"""Command-line tools (importable: ``python -m tools.<name>``)."""

import lewel_bench  # noqa: F401,E402  (first: it sets the OpenMP wait policy before torch loads)
