"""Graph tests: keep torch.export's structured trace logging off (pytest's log capture enables it, slowly)."""

import logging

logging.getLogger("torch.__trace").setLevel(logging.WARNING)
