"""One batch sender: send a batch, and when the vendor refuses it whole, isolate the bad inputs.

Vendors refuse a whole batch for one bad input (HubSpot's 400 on batch/update, Mailchimp's 400 on
a segment update). :func:`send_isolating` then

1. fails the inputs the refusal names (when the vendor says which) and resends the rest once;
2. otherwise splits the batch (in halves by default) and sends each part, recursively,
   as long as the :class:`CallBudget` allows: a refusal of the request *as a whole* (say, a bad
   segment id) would otherwise cost one call per record;
3. fails what is left when the budget is spent, with the vendor's message.

A batch the vendor accepts is mapped to per-record verdicts by the caller's ``send`` (reading 207
bodies and per-record errors is vendor knowledge). The sender does no I/O of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TypeVar

from core.errors import ApiError, FatalApiError, RejectedRecordError

Item = TypeVar("Item")
Key = TypeVar("Key", bound=Hashable)
Verdict = tuple[str, str]  # (outcome, message): "sent" | "failed" | "suppressed" | "skipped"


class CallBudget:
    """How many more calls isolating bad inputs may cost (None: as many as it takes)."""

    def __init__(self, calls: int | None) -> None:
        self.left = calls

    def take(self, calls: int) -> bool:
        """Reserve ``calls`` calls; False (and nothing reserved) when the budget cannot pay them."""
        if self.left is None:
            return True
        if self.left < calls:
            return False
        self.left -= calls
        return True


def halves(items: Sequence[Item]) -> list[Sequence[Item]]:
    """The default split: two halves (the first one shorter for an odd count)."""
    half = len(items) // 2
    return [part for part in (items[:half], items[half:]) if part]


def send_isolating(
    items: Sequence[Item],
    send: Callable[[Sequence[Item]], Mapping[Key, Verdict]],
    key: Callable[[Item], Key],
    budget: CallBudget,
    *,
    named: Callable[[RejectedRecordError, Sequence[Item]], Mapping[Key, str]] | None = None,
    split: Callable[[Sequence[Item]], list[Sequence[Item]]] = halves,
    message: Callable[[ApiError], str] = str,
    absorb: tuple[type[ApiError], ...] = (),
) -> dict[Key, Verdict]:
    """Send ``items`` with ``send``; a verdict per key. See the module docstring for the splitting rules.

    ``named`` reads which inputs a refusal names; ``message`` turns the vendor's error into the
    failed records' message; errors of a type in ``absorb`` fail the inputs of that call instead of
    propagating (a :class:`FatalApiError` always propagates: the whole run must stop).
    """
    try:
        return dict(send(items))
    except FatalApiError:
        raise
    except RejectedRecordError as exc:
        keys = {key(i): i for i in items}
        if len(keys) <= 1:
            return dict.fromkeys(keys, ("failed", message(exc)))
        bad = {k: m for k, m in (named(exc, items) if named else {}).items() if k in keys}
        if bad and budget.take(1):  # the vendor said which inputs are bad: fail those, resend the rest once
            out: dict[Key, Verdict] = {k: ("failed", m) for k, m in bad.items()}
            rest = [i for i in items if key(i) not in bad]
            if rest:
                out.update(send_isolating(rest, send, key, budget, named=named, split=split, message=message,
                                          absorb=absorb))
            return out
        parts = split(items)
        if len(parts) < 2 or not budget.take(len(parts)):
            return dict.fromkeys(keys, ("failed", message(exc)))
        out = {}
        for part in parts:
            out.update(send_isolating(part, send, key, budget, named=named, split=split, message=message,
                                      absorb=absorb))
        return out
    except absorb as exc:
        return {key(i): ("failed", message(exc)) for i in items}
