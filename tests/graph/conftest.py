"""Graph tests run their tiny models on one thread."""

from tiny_models import single_thread  # noqa: F401
