"""Weighted kNN evaluation (k=20, cosine similarity, T=0.07) of a frozen backbone; ``python -m eval_knn``."""

import lewel_bench  # noqa: F401,E402  (first: it sets the OpenMP wait policy before torch loads)
