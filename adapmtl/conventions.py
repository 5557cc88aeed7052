"""The two ways of computing numbers where the original AdapMTL code (ACM MM 2024), and the
AdaShare/DiSparse code it builds on, differs from the correct computation.

"paper": as the original code does, for numbers comparable with the paper's tables; "corrected"
(the default): our fixes. Every point, side by side: docs/conventions.md. The tasks
(`adapmtl.tasks`), the adaptive weighting (`adapmtl.weighting`), the data transform and the run
config (`convention:`) all read these names from here.
"""
from __future__ import annotations

from typing import Literal, get_args

Convention = Literal["paper", "corrected"]
CONVENTIONS: tuple[str, ...] = get_args(Convention)
DEFAULT_CONVENTION: Convention = "corrected"
