"""Command-line tools (importable: ``python -m tools.<name>``)."""
