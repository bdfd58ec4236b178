"""A tiny stage for the SLURM tests: every rank joins the process group and writes what it saw."""
