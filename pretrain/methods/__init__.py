"""Pretraining methods, one builder file each on a shared base; ``METHODS.get(name)(cfg)`` builds one."""
from .base import METHODS, SSLMethod  # noqa: F401
from . import byol, cgh, lewel, mcl, mocov2  # noqa: F401  (registration)
