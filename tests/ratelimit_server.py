"""A rate-limiting teacher for tests and bench/ratelimit.py: a ScriptedServer handler that admits `per_second`
requests a second, answers the others 429, and can tell the client where it stands in OpenAI's x-ratelimit-*
headers. Two ways of counting:

- `sliding`: at most `per_second x window` requests in any `window` seconds (the strictest way to count: requests
  that a stall of the network or the machine bunched together are refused one window later);
- `bucket`: a token bucket of `per_second x window` requests refilled at `per_second`, as OpenAI describes its
  limits (continuously replenished); bunched requests pass while the bucket holds them.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from servers import Reply, chat_reply

SLIDING, BUCKET = "sliding", "bucket"


class RateLimitedTeacher:
    """Call it as ScriptedServer's handler. `admitted` and `refused_at` hold the monotonic times of the requests
    answered 200 and 429, so a test can measure the rate reached and see when the 429s came. `refuse_all_until(t)`
    answers every request 429 until then (a burst of 429s, as a provider under load sends)."""

    def __init__(self, per_second: float, window: float = 1.0, counting: str = SLIDING, headers: bool = False,
                 delay: float = 0.0):
        self.per_second = per_second
        self.window = window
        self.counting = counting
        self.allowed = max(1, int(per_second * window))
        self.headers = headers
        self.delay = delay
        self.admitted: list[float] = []
        self.refused_at: list[float] = []
        self._recent: deque[float] = deque()  # sliding: the admitted requests of the last window
        self._level = float(self.allowed)  # bucket: requests it holds
        self._updated = time.monotonic()
        self._refuse_until = 0.0
        self._lock = threading.Lock()

    def refuse_all_until(self, when: float) -> None:
        with self._lock:
            self._refuse_until = when

    @property
    def refused(self) -> int:
        return len(self.refused_at)

    def _admit(self, now: float) -> tuple[bool, int, float]:
        """(admitted, requests remaining, seconds until fully reset)."""
        if self.counting == BUCKET:
            self._level = min(self.allowed, self._level + (now - self._updated) * self.per_second)
            self._updated = now
            ok = self._level >= 1 and now >= self._refuse_until
            self._level -= 1 if ok else 0
            return ok, int(self._level), (self.allowed - self._level) / self.per_second
        while self._recent and self._recent[0] <= now - self.window:
            self._recent.popleft()
        ok = len(self._recent) < self.allowed and now >= self._refuse_until
        if ok:
            self._recent.append(now)
        return ok, self.allowed - len(self._recent), self._recent[-1] + self.window - now if self._recent else 0.0

    def __call__(self, path: str, body: dict) -> Reply:
        with self._lock:
            now = time.monotonic()
            ok, remaining, reset = self._admit(now)
            (self.admitted if ok else self.refused_at).append(now)
            if now < self._refuse_until:
                remaining, reset = 0, max(reset, self._refuse_until - now)
        reply = chat_reply("fine") if ok else Reply(status=429, body={"error": {"message": "rate limit reached"}})
        reply.delay = self.delay
        if self.headers:
            reply.headers = {"x-ratelimit-limit-requests": f"{self.per_second * 60:g}",
                             "x-ratelimit-remaining-requests": str(remaining),
                             "x-ratelimit-reset-requests": f"{reset * 1000:.0f}ms"}
        return reply

    def rate(self, start: float, end: float) -> float:
        """Requests admitted per second between two monotonic times."""
        with self._lock:
            return sum(1 for t in self.admitted if start <= t < end) / (end - start)
