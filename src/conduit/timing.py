"""Start-up trace: ``--profile`` and ``--profile-out FILE``.

Standard library only and nothing imported: it runs on the start-up path.
"""

from __future__ import annotations

import os
import time

__all__ = ["Profile"]


class _Span:
    __slots__ = ("name", "profile", "start")

    def __init__(self, profile: Profile, name: str) -> None:
        self.profile = profile
        self.name = name
        self.start = 0

    def __enter__(self) -> _Span:
        self.start = time.perf_counter_ns()
        self.profile.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        end = time.perf_counter_ns()
        self.profile.depth -= 1
        self.profile.spans.append((self.name, self.start, end, self.profile.depth))


class Profile:
    """Collects named, nested spans; cheap enough to stay on when disabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.origin = time.perf_counter_ns()
        self.spans: list[tuple[str, int, int, int]] = []
        self.depth = 0

    def span(self, name: str) -> _Span:
        return _Span(self, name)

    def report(self) -> str:
        """A table like ``nvim --startuptime``: start and duration of each span, in ms."""
        lines = [
            "conduit start-up profile (ms since the kernel entry)",
            "   start  duration  phase",
        ]
        for name, start, end, depth in sorted(self.spans, key=lambda s: (s[1], s[3])):
            lines.append(
                f"{(start - self.origin) / 1e6:8.3f}  {(end - start) / 1e6:8.3f}  "
                f"{'  ' * depth}{name}"
            )
        total = (time.perf_counter_ns() - self.origin) / 1e6
        lines.append(f"{total:8.3f}            total")
        return "\n".join(lines)

    def write_chrome_trace(self, path: str) -> None:
        """Write Chrome trace-event JSON (opens in Perfetto and speedscope)."""
        import json

        pid = os.getpid()
        events = [
            {
                "name": name,
                "cat": name.split(":", 1)[0],
                "ph": "X",
                "ts": (start - self.origin) / 1000,
                "dur": (end - start) / 1000,
                "pid": pid,
                "tid": 1,
            }
            for name, start, end, _ in self.spans
        ]
        meta = {
            "name": "process_name",
            "ph": "M",
            "pid": pid,
            "tid": 1,
            "args": {"name": "conduit"},
        }
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"traceEvents": [meta, *events], "displayTimeUnit": "ms"}, f)
