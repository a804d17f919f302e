"""Request- and token-per-minute limits for one served model (`--rpm`, `--tpm`), shared by all its slot workers.

The slot workers of an `OpenAIModel` all run on the model's one event loop, so one `RateLimiter` per model, with an
asyncio lock, paces every request of every `stream` call. Each request costs 1 against the request limit and its
prompt's tokens (estimated from its characters, the ratio corrected from the answers' `usage`) plus `max_tokens`
against the token limit, which is how OpenAI counts them.

Requests are spread evenly: a token bucket refilled at the limit's rate that holds one request while nobody waits,
so neither the start nor the end of a pause sends a burst that a server enforcing its limit over a second or less
would refuse. When the server sends `x-ratelimit-limit-*`, `x-ratelimit-remaining-*` and `x-ratelimit-reset-*`
(OpenAI does; vLLM does not), the limiter paces at the server's limit when none was given, and never sends more than
the server said remains plus what it earns back by then (at the limit's rate, until its reset). After a 429 the
pace drops and climbs back over a few seconds (`Slowdown`). With no limit given and no such headers, `active` stays
false and the backend sends without asking the limiter, so it costs nothing.

    limiter = RateLimiter(rpm=600, tpm=None)
    ticket = await limiter.acquire(requests)          # waits for its turn
    limiter.observe(response.status_code, response.headers, ticket)
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from apprentice.errors import UserError
from apprentice.models.base import Completion, Request

# Paced at this share of the limit: arrivals jitter by a few ms, and at exactly the limit a server counting over one
# second refuses the request that lands early (measured on a busy 2-core machine: 0.98 drew twice the 429s of 0.97).
HEADROOM = 0.97
# A waiter woken late by a busy event loop may catch up this many seconds of the rate, so the average rate is kept;
# a catch-up packs more than the pace into the next second, and this is what the headroom leaves in one second.
CATCH_UP_S = 1.0 - HEADROOM
# After a 429 the pace drops to SLOWDOWN of what it was, climbs back by RECOVERY_PER_S of the limit a second to
# PROBE_GAP below where the 429 came, and only then probes further, slowly (PROBE_PER_S), towards the whole limit: a
# server that refuses a little below the limit it was given (a shorter window, arrivals bunched on the way) is
# then met at its own rate with a 429 now and then, not one every few seconds.
SLOWDOWN = 0.9
RECOVERY_PER_S = 0.05
PROBE_GAP = 0.02
PROBE_PER_S = 0.002
MIN_FACTOR = 0.05
# One overshoot gets many requests in flight answered 429 at once: they count as one signal, not a collapse.
SLOWDOWN_EVERY_S = 1.0
DEFAULT_RESET_S = 1.0  # a server that tells what remains but not until when: trust it this long
CHARS_PER_TOKEN = 4.0  # prompt estimate before any `usage` came back (English text with GPT-style tokenizers)
_PRIOR_CHARS = 2000  # the estimate's weight, in characters of prompts seen, against measured usage
_EPSILON = 1e-9  # units short of a whole one that count as there: float sums of rate x time land just below
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def check_limits(rpm: float | None, tpm: float | None, rpm_name: str = "--rpm", tpm_name: str = "--tpm") -> None:
    """Refuse a limit that is not a positive number per minute (one line, naming the setting)."""
    for name, value in ((rpm_name, rpm), (tpm_name, tpm)):
        if value is not None and not value > 0:
            raise UserError(f"{name} must be more than 0 (per minute), got {value:g}")


def parse_duration(value: str | None) -> float | None:
    """Seconds from an `x-ratelimit-reset-*` header: OpenAI's Go-style durations ("20ms", "1.5s", "6m0s",
    "1h2m3s") or plain seconds; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _UNIT_S[unit] for number, unit in parts)


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


@dataclass
class Bucket:
    """Paces units (requests or tokens) at `rate` a second. While nobody waits it fills up to one unit only, so after
    a pause one request goes at once and the next ones follow at the rate: no burst. While a request waits for its
    turn it earns past that, up to `CATCH_UP_S` of the rate, so a waiter that the event loop wakes a little late lets
    the next one go that much sooner and the average stays at `rate`. A cost above one unit goes once one unit is
    there and leaves the bucket in debt, so large requests are paced too."""

    rate: float
    level: float = 1.0  # the first request goes at once
    updated: float = 0.0

    def _refill(self, now: float, since: float) -> None:
        """Earn up to `now` for a request waiting since `since` (what came before, nobody waited for)."""
        if since > self.updated:
            self.level = min(1.0, self.level + (since - self.updated) * self.rate)
            self.updated = since
        if now > self.updated:
            self.level = min(1.0 + self.rate * CATCH_UP_S, self.level + (now - self.updated) * self.rate)
            self.updated = now

    def retune(self, rate: float, now: float, since: float) -> None:
        """Go on at another rate (a slowdown, a limit the server announced) from `now`, keeping what was earned."""
        if rate != self.rate:
            self._refill(now, since)
            self.rate = rate

    def delay(self, cost: float, now: float, since: float) -> float:
        """Seconds until `cost` may go (0: now), for a request waiting since `since`."""
        self._refill(now, since)
        need = min(cost, 1.0)
        return 0.0 if self.level >= need - _EPSILON else (need - self.level) / self.rate

    def take(self, cost: float, now: float, since: float) -> None:
        self._refill(now, since)
        self.level -= cost


@dataclass
class ServerWindow:
    """What the server last said about one limit: `remaining` at `since` (less what was sent after the request whose
    answer said so), earning `refill` a second up to `limit`, and back to full at `reset_at`."""

    remaining: float
    since: float
    reset_at: float
    limit: float | None = None
    refill: float = 0.0

    def delay(self, cost: float, now: float) -> float:
        if now >= self.reset_at:
            return 0.0
        allowed = self.remaining + self.refill * (now - self.since)
        need = cost
        if self.limit is not None:  # a request above the whole limit can only wait for the reset
            allowed, need = min(allowed, self.limit), min(cost, self.limit)
        if allowed >= need - _EPSILON:
            return 0.0
        wait = self.reset_at - now
        return min(wait, (need - allowed) / self.refill) if self.refill > 0 else wait

    def take(self, cost: float) -> None:
        self.remaining -= cost


class _Limit:
    """One kind of limit (requests or tokens): its pace and the server's last word on it."""

    def __init__(self, per_minute: float | None):
        self.given = per_minute / 60 if per_minute else None  # units a second, from --rpm / --tpm
        self.announced: float | None = None  # units a second, from x-ratelimit-limit-*
        self.bucket: Bucket | None = None
        self.window: ServerWindow | None = None
        self.sent = 0.0  # units sent in all: what an answer's `remaining` does not count yet
        self.unpaced = 0  # requests sent before anything limited them (`RateLimiter.skip`)
        self.applied = 0  # the request whose answer `window` comes from: older answers are stale

    def delay(self, cost: float, now: float, since: float, factor: float) -> float:
        rates = [rate for rate in (self.given, self.announced) if rate is not None]
        delay = 0.0
        if rates:
            rate = min(rates) * HEADROOM * factor
            if self.bucket is None:
                # what went out at once before the limit was known is paid back first: a server that counts over a
                # window still holds all of it, so pacing as if it had been spread out would exceed the limit
                self.bucket = Bucket(rate, level=1.0 - self.unpaced, updated=since)
            else:
                self.bucket.retune(rate, now, since)
            delay = self.bucket.delay(cost, now, since)
        if self.window is not None:
            delay = max(delay, self.window.delay(cost, now))
        return delay

    def take(self, cost: float, now: float, since: float) -> float:
        if self.bucket is not None:
            self.bucket.take(cost, now, since)
        if self.window is not None:
            self.window.take(cost)
        self.sent += cost
        return self.sent

    def observe(self, headers: Mapping[str, str], kind: str, seq: int, sent_then: float | None, at: float) -> bool:
        """Follow the server's x-ratelimit-* headers for this kind, as they stood `at` (when the request went, with
        `sent_then` units sent); whether there were any."""
        limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
        remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
        if limit is None and remaining is None:
            return False
        if limit:
            self.announced = limit / 60  # OpenAI's limits are per minute
        if remaining is not None and seq >= self.applied:  # requests sent unpaced share one number: all count
            self.applied = seq
            reset = parse_duration(headers.get(f"x-ratelimit-reset-{kind}"))
            reset = DEFAULT_RESET_S if reset is None else reset
            # the server counted everything up to this request, nothing sent after it
            remaining -= self.sent - (self.sent if sent_then is None else sent_then)
            refill = 0.0
            if limit:  # a bucket refilled at its rate until full at the reset, never faster than per minute
                refill = min((limit - remaining) / reset, limit / 60) if reset > 0 else limit / 60
            self.window = ServerWindow(remaining, at, at + reset, limit, max(0.0, refill))
        return True


@dataclass
class Slowdown:
    """The share of the limits to pace at, lowered by 429s (see SLOWDOWN); 1 until the first."""

    floor: float = 1.0  # the share right after the last slowdown
    ceiling: float = 1.0  # where the quick climb back ends
    since: float | None = None  # when the last slowdown came

    def factor(self, now: float) -> float:
        if self.since is None:
            return 1.0
        elapsed = now - self.since
        climb = (self.ceiling - self.floor) / RECOVERY_PER_S
        if elapsed <= climb:
            return self.floor + RECOVERY_PER_S * elapsed
        return min(1.0, self.ceiling + PROBE_PER_S * (elapsed - climb))

    def refused(self, now: float) -> None:
        """A 429 came back."""
        if self.since is not None and now - self.since < SLOWDOWN_EVERY_S:
            return
        share = self.factor(now)
        self.floor = max(MIN_FACTOR, share * SLOWDOWN)
        self.ceiling = max(self.floor, share * (1 - PROBE_GAP))
        self.since = now


class Ticket:
    """What `acquire` hands out for one HTTP attempt: its place in the sending order, to read its answer's headers."""

    __slots__ = ("seq", "at", "requests_sent", "tokens_sent", "chars")

    def __init__(self, seq: int, at: float, requests_sent: float, tokens_sent: float, chars: int):
        self.seq = seq
        self.at = at
        self.requests_sent = requests_sent
        self.tokens_sent = tokens_sent
        self.chars = chars


def prompt_chars(requests: Sequence[Request]) -> int:
    total = 0
    for request in requests:
        if request.prompt is not None:
            total += len(request.prompt)
        for message in request.messages or ():
            content = message.get("content") or ""
            total += len(content) if isinstance(content, str) else len(str(content))
    return total


class RateLimiter:
    """The request and token limits of one model; `clock` is injectable so tests can drive time."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.requests = _Limit(rpm)
        self.tokens = _Limit(tpm)
        self.clock = clock
        # false while nothing limits: the backend then sends without asking (no lock, no estimate)
        self.active = rpm is not None or tpm is not None
        self._count_tokens = tpm is not None  # estimates are made only when a token limit needs them
        self._seq = 0
        self.slowdown = Slowdown()
        self._seen_chars = 0
        self._seen_tokens = 0
        self._lock = asyncio.Lock()

    def token_cost(self, requests: Sequence[Request]) -> tuple[float, int]:
        """(tokens counted against the token limit, prompt characters): estimated prompt tokens plus max_tokens."""
        chars = prompt_chars(requests)
        per_char = (_PRIOR_CHARS / CHARS_PER_TOKEN + self._seen_tokens) / (_PRIOR_CHARS + self._seen_chars)
        return math.ceil(chars * per_char) + sum(request.max_tokens for request in requests), chars

    def delay(self, tokens: float, now: float, since: float) -> float:
        """Seconds until a request of `tokens`, waiting since `since`, may go (0: now)."""
        factor = self.slowdown.factor(now)
        return max(self.requests.delay(1, now, since, factor), self.tokens.delay(tokens, now, since, factor))

    def take(self, tokens: float, chars: int, now: float, since: float) -> Ticket:
        self._seq += 1
        return Ticket(self._seq, now, self.requests.take(1, now, since), self.tokens.take(tokens, now, since), chars)

    def skip(self) -> None:
        """Count a request sent without asking, while the limiter was inactive."""
        self.requests.unpaced += 1

    async def acquire(self, requests: Sequence[Request]) -> Ticket:
        """Wait until one HTTP request carrying `requests` may go, and count it."""
        tokens, chars = self.token_cost(requests) if self._count_tokens else (0.0, 0)
        since = self.clock()
        async with self._lock:  # one waiter at a time, in order: the others queue behind it
            while (wait := self.delay(tokens, self.clock(), since)) > 0:
                await asyncio.sleep(wait)
            return self.take(tokens, chars, self.clock(), since)

    def observe(self, status: int, headers: Mapping[str, str], ticket: Ticket | None) -> None:
        """Learn from one answer: its x-ratelimit-* headers, and whether it was a 429. `headers` is case-insensitive
        (httpx's) or has lower-case keys; `ticket` is None for a request sent while the limiter was inactive."""
        now = self.clock()
        # one look for the prefix first: a server that sends none (vLLM) costs a scan, not six lookups, per answer
        if any(key.startswith("x-ratelimit-") for key in headers):
            # servers check their limits as a request arrives: what the headers say stood when it was sent, and
            # the server has been earning back since
            seq, at = (self._seq, now) if ticket is None else (ticket.seq, ticket.at)
            found_requests = self.requests.observe(headers, "requests", seq,
                                                   None if ticket is None else ticket.requests_sent, at)
            found_tokens = self.tokens.observe(headers, "tokens", seq,
                                               None if ticket is None else ticket.tokens_sent, at)
            if found_requests or found_tokens:
                self.active = True
                self._count_tokens = self._count_tokens or found_tokens
        if status == 429 and ticket is not None:  # a request sent unpaced says nothing of the pace
            self.slowdown.refused(now)

    def settle(self, ticket: Ticket, completions: Sequence[Completion]) -> None:
        """Correct the prompt-token estimate from the answer's `usage`."""
        prompt_tokens = sum(completion.prompt_tokens for completion in completions)
        if ticket.chars and prompt_tokens:
            self._seen_chars += ticket.chars
            self._seen_tokens += prompt_tokens
