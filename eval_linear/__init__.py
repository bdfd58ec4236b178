"""Linear evaluation (LEWEL Sec. 4.1): a linear classifier on the frozen backbone; ``python -m eval_linear``."""
