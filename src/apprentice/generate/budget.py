"""A hard cost cap for generation (`--max-cost`): a request is sent only if what the teacher has been paid plus the
worst case of every request in flight, this one included, stays within the cap, so the cap is never passed.

The worst case of a request is its prompt at most one token per UTF-8 byte (a BPE token covers at least one byte)
plus a few tokens per chat message for the template's markers, and `max_tokens` of completion, at the given
prices. A request the call record already answered costs nothing and reserves nothing. A reservation is released
when its answer arrives; the answer's real cost is then part of what was paid. Pure: the caller says what was paid
and whether a request is cached.

    budget = Budget(cap=5.0, price_in=0.15, price_out=0.60, paid_before=1.2)
    if budget.admit(job_id, request, cached=False, paid_now=stats.cost_usd): send it
    budget.release(job_id)    # when its answer arrives
"""

from __future__ import annotations

from dataclasses import dataclass, field

from apprentice.models.base import Request

TOKENS_PER_MESSAGE = 16  # chat templates add role markers and separators around each message


def worst_case_tokens(request: Request) -> tuple[int, int]:
    """An upper bound on the (prompt, completion) tokens the request can be billed for."""
    if request.is_chat:
        prompt = sum(len(str(m.get("content", "")).encode("utf-8")) + TOKENS_PER_MESSAGE
                     for m in request.messages or ())
    else:
        prompt = len((request.prompt or "").encode("utf-8")) + TOKENS_PER_MESSAGE
    return prompt, request.max_tokens


@dataclass
class Budget:
    cap: float  # USD the teacher may be paid in all, earlier invocations included
    price_in: float  # USD per million prompt tokens
    price_out: float  # USD per million completion tokens
    paid_before: float = 0.0  # USD the call record shows paid to this teacher before this invocation
    reserved: dict[int, float] = field(default_factory=dict)  # job id -> worst-case USD, for requests in flight

    def worst_case(self, request: Request) -> float:
        prompt, completion = worst_case_tokens(request)
        return (prompt * self.price_in + completion * self.price_out) / 1e6

    def admit(self, job_id: int, request: Request, cached: bool, paid_now: float) -> bool:
        """Reserve the request's worst case if it fits under the cap with everything in flight; `paid_now` is what
        this invocation has paid so far."""
        cost = 0.0 if cached else self.worst_case(request)
        if self.paid_before + paid_now + sum(self.reserved.values()) + cost > self.cap:
            return False
        self.reserved[job_id] = cost
        return True

    def release(self, job_id: int) -> None:
        self.reserved.pop(job_id, None)
