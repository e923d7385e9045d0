"""One record per model response, and whether a goodbye is due.

Each `ResponseHandle` (in the spirit of livekit agents' SpeechHandle) knows its items, whether it may be
interrupted, whether it was cut, whether it carries `end_call`, and which realtime session produced it. The
ledger answers the two questions the bridge asks most: what does a barge-in cut, and is a goodbye due (its `bye`
marker's echo, outbound.py, then means it has played).

Tool-call events may come without `response_id` (docs/xai-realtime.md, "Tool calls"); such a call belongs to
the response that is streaming at that moment, so `end_call` still waits for that response's goodbye.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ResponseHandle:
    id: str
    session: int = 0  # which realtime session (0, then 1 after a reopen) produced it
    created_at: float = 0.0
    interruptible: bool = True
    forced: bool = False
    dropped: bool = False
    done: bool = False
    had_audio: bool = False
    end_call: bool = False
    listen: bool = False  # a tool turn after which the model listens (no response.create)
    tool_calls: int = 0
    items: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BargeIn:
    """What the callee's speech cuts: `responses` to drop; `protected` if one of them may not be interrupted."""

    responses: list[ResponseHandle]
    protected: bool
    cancel_active: bool


class ResponseLedger:
    def __init__(self) -> None:
        self._responses: dict[str, ResponseHandle] = {}
        self._item_owner: dict[str, str] = {}
        self._active: str | None = None
        self._pending_forced: tuple[bool, bool] | None = None  # (interruptible, end_call) of a force_message
        self._tool_calls_seen: set[str] = set()
        self.goodbye_pending = False  # a `bye` marker follows the goodbye's audio; its echo ends the call

    # ------------------------------------------------------------------------------------------------ responses

    def get(self, response_id: str) -> ResponseHandle | None:
        return self._responses.get(response_id)

    def handle(self, response_id: str, *, session: int, now: float) -> ResponseHandle:
        state = self._responses.get(response_id)
        if state is None:
            state = self._responses[response_id] = ResponseHandle(id=response_id, session=session, created_at=now)
        return state

    def expect_forced(self, interruptible: bool, *, end_call: bool = False) -> None:
        """A verbatim line was requested: the next response created is it (`end_call`: hang up after it)."""
        self._pending_forced = (interruptible, end_call)

    def created(self, response_id: str, *, session: int, now: float) -> ResponseHandle:
        state = self.handle(response_id, session=session, now=now)
        if self._pending_forced is not None:
            state.forced = True
            state.interruptible, state.end_call = self._pending_forced
            self._pending_forced = None
        self._active = state.id
        return state

    def finished(self, response_id: str, *, session: int, now: float) -> ResponseHandle:
        state = self.handle(response_id, session=session, now=now)
        state.done = True
        if self._active == state.id:
            self._active = None
        return state

    @property
    def active(self) -> ResponseHandle | None:
        state = self._responses.get(self._active or "")
        return state if state is not None and not state.done else None

    def add_item(self, response_id: str, item_id: str, *, session: int, now: float) -> ResponseHandle:
        state = self.handle(response_id, session=session, now=now)
        state.items.append(item_id)
        self._item_owner[item_id] = state.id
        return state

    def owner(self, item_id: str | None) -> ResponseHandle | None:
        return self._responses.get(self._item_owner.get(item_id or "", ""))

    def for_audio(self, response_id: str, item_id: str) -> ResponseHandle | None:
        """The response an audio delta belongs to (remembering its item if it is new)."""
        rid = response_id or self._item_owner.get(item_id, "")
        if item_id and item_id not in self._item_owner and rid:
            self._item_owner[item_id] = rid
        return self._responses.get(rid)

    def for_tool_call(self, call_id: str, response_id: str, *, session: int, now: float) -> \
            tuple[bool, ResponseHandle | None]:
        """(first time this call id is seen, the response that carried it). Without `response_id`, the carrier
        is the response streaming now."""
        if call_id in self._tool_calls_seen:
            return False, None
        self._tool_calls_seen.add(call_id)
        state = self.handle(response_id, session=session, now=now) if response_id else self.active
        if state is not None:
            state.tool_calls += 1
        return True, state

    # ------------------------------------------------------------------------------------------------ barge-in

    def barge_in(self, playing_items: list[str]) -> BargeIn | None:
        """What the callee's speech cuts, given the items whose audio is queued or buffered; None if nothing."""
        active = self.active
        ids = {self._item_owner.get(i, "") for i in playing_items}
        if active is not None:
            ids.add(active.id)
        states = [self._responses[r] for r in ids if r in self._responses]
        if not playing_items and not states:
            return None
        return BargeIn(responses=states, protected=any(not s.interruptible for s in states),
                       cancel_active=active is not None)

    def drop(self, cut: BargeIn) -> None:
        for state in cut.responses:
            state.dropped = True

    def end_call_requested(self) -> bool:
        return self.goodbye_pending or any(s.end_call for s in self._responses.values())

    def forget_session(self) -> None:
        """The session is gone: its unfinished responses never finish."""
        for state in self._responses.values():
            if not state.done:
                state.done = state.dropped = True
        self._active = None
        self._pending_forced = None

    # ------------------------------------------------------------------------------------------------ goodbye

    def cancel_goodbye(self) -> bool:
        """The callee spoke over the goodbye: True if one was pending (the hang-up waits for a new one)."""
        pending = self.goodbye_pending
        self.goodbye_pending = False
        return pending
