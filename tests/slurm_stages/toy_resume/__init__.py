"""A tiny resumable stage used only by the SLURM requeue test (tests/test_slurm.py)."""
