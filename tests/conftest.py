"""Shared test setup: this folder is on sys.path, so tests import helpers such as `golden_counts`.

Property tests draw the same examples on every run (`derandomize`), so the suite is a gate that passes or
fails on the code, not on the draw; `HYPOTHESIS_PROFILE=explore` draws fresh random examples on each run,
for hunting (a failure found so becomes an explicit case in the test)."""

import os

from hypothesis import settings

settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))
