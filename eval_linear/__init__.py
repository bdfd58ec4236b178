"""Linear evaluation (LEWEL Sec. 4.1): a linear classifier on the frozen backbone; ``python -m eval_linear``."""

import lewel_bench  # noqa: F401,E402  (first: it sets the OpenMP wait policy before torch loads)
