"""Fixtures of the training-loop tests: one thread for tiny models, a clean Accelerate state per test."""

from accelerate_state import fresh_accelerate_state  # noqa: F401
from tiny_models import single_thread  # noqa: F401
