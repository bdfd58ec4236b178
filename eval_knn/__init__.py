"""Weighted kNN evaluation (k=20, cosine similarity, T=0.07) of a frozen backbone; ``python -m eval_knn``."""
