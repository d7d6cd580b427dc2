"""User-facing errors: one line naming the clip, the file and the problem."""

from __future__ import annotations

import os


class ClipError(Exception):
    """A bad input for one clip: ``<clip>: <file>: <problem>``."""

    def __init__(self, clip_id: str | None, path: str | os.PathLike | None, problem: str):
        self.clip_id = clip_id
        self.path = None if path is None else str(path)
        self.problem = problem
        parts = [clip_id or "-", self.path or "-", problem]
        super().__init__(": ".join(parts))


class SheetError(Exception):
    """Every bad row of a sample sheet at once, one line per problem."""

    def __init__(self, sheet: str | os.PathLike, problems: list[str]):
        self.sheet = str(sheet)
        self.problems = list(problems)
        lines = [f"{self.sheet}: {len(self.problems)} problem(s)"]
        lines += [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))
