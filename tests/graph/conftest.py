"""Graph tests run their tiny models on one thread."""

from graph_tiny import single_thread  # noqa: F401
