"""Sans-IO order keeping for one bus channel: drop duplicates, detect gaps, ask for a resync.

Redis pub/sub is at most once: a message can be lost (publisher buffer overflow, a
dropped connection), never reordered on one connection. Each message carries the
channel's ``seq`` (1, 2, 3, ... per ``epoch``), so a :class:`GapTracker` can tell:

- ``seq <= last``: a duplicate (a resync already delivered it): dropped;
- ``seq == last + 1``: delivered;
- ``seq > last + 1``, or a *marker* (the publisher dropped messages up to ``seq``), or
  a lost connection: a gap. The tracker answers "resync after ``last``" and buffers
  the live messages that follow until :meth:`GapTracker.filled` hands it the missing
  range, fetched by the owner from the home node, with the home node's latest seq. Up
  to that seq the answer is authoritative (what the home node no longer holds is
  skipped), so a resync never loops; buffered messages past it are checked again.

A new ``epoch`` (the task was deleted and created again) restarts the count at 0.
No trio, no Redis, no clock here: tests drive it with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Live messages kept while a resync is in flight; past this they are dropped and the
#: resync's answer (which runs up to the home node's latest seq) covers them.
MAX_PENDING = 10_000


@dataclass(frozen=True, slots=True)
class Envelope:
    """One bus message: where it goes, its place in the channel, and the encoded payload."""

    channel: str
    seq: int
    epoch: str
    payload: bytes
    #: True for a publisher's "messages up to ``seq`` were dropped" marker (no payload).
    marker: bool = False


@dataclass(frozen=True, slots=True)
class Step:
    """What the owner must do after feeding the tracker."""

    #: Messages to hand to local subscribers now, in order.
    deliver: tuple[Envelope, ...] = ()
    #: Ask the home node for everything after this seq (None: no resync needed).
    resync_after: int | None = None


NOTHING = Step()


@dataclass(slots=True)
class GapTracker:
    """The order state of one channel: last seq delivered, epoch, resync in flight."""

    #: Last seq delivered (None: take the first message as the starting point).
    last: int | None = None
    epoch: str | None = None
    resyncing: bool = False
    #: Messages may have been lost again while a resync was in flight: ask once more.
    again: bool = False
    pending: list[Envelope] = field(default_factory=list)
    max_pending: int = MAX_PENDING

    def receive(self, envelope: Envelope) -> Step:
        """Feed one message from the bus; returns what to deliver or to ask."""
        if self.epoch is not None and envelope.epoch != self.epoch:
            self.last, self.resyncing, self.again, self.pending = 0, False, False, []
        self.epoch = envelope.epoch
        if self.resyncing:
            newer = self.last is None or envelope.seq > self.last
            if newer and not envelope.marker and len(self.pending) < self.max_pending:
                self.pending.append(envelope)
            return NOTHING
        last = self.last
        if last is None:
            if envelope.marker:
                return NOTHING
            self.last = envelope.seq
            return Step(deliver=(envelope,))
        if envelope.seq <= last:
            return NOTHING
        if envelope.seq == last + 1 and not envelope.marker:
            self.last = envelope.seq
            return Step(deliver=(envelope,))
        self.resyncing = True
        if not envelope.marker:
            self.pending.append(envelope)
        return Step(resync_after=last)

    def lost(self) -> Step:
        """The bus may have lost messages (reconnect, overflow): resync after ``last``."""
        if self.last is None:
            return NOTHING  # nothing delivered yet: there is no position to resume from
        if self.resyncing:
            self.again = True  # the answer in flight may predate the loss
            return NOTHING
        self.resyncing = True
        return Step(resync_after=self.last)

    def filled(self, missing: list[Envelope], latest: int) -> Step:
        """The resync's answer, then the buffered live messages; may ask again.

        Args:
            missing: the home node's messages after ``resync_after`` (any order).
            latest: the home node's latest seq when it read them. Up to ``latest`` the
                answer is authoritative: a seq it lacks (trimmed history) is skipped.
                Buffered messages past ``latest`` go through :meth:`receive` again, so
                a loss after the home node read its history is still asked for.
        """
        out: list[Envelope] = []
        self.resyncing = False
        pending, self.pending = self.pending, []
        held = [e for e in pending if e.seq <= latest]  # ours too, if the answer lacks them
        for envelope in sorted([*missing, *held], key=lambda e: e.seq):
            if self.last is None or envelope.seq > self.last:
                self.last = envelope.seq
                out.append(envelope)
        if self.last is None or latest > self.last:
            self.last = latest
        pending = [e for e in pending if e.seq > latest]
        again, self.again = self.again, False
        resync_after = None
        for envelope in pending:
            step = self.receive(envelope)
            out.extend(step.deliver)
            if step.resync_after is not None:
                resync_after = step.resync_after
        if resync_after is None and again:
            self.resyncing = True
            resync_after = self.last
        return Step(deliver=tuple(out), resync_after=resync_after)

    def failed(self) -> None:
        """The resync could not be answered: stay resyncing; the owner asks again."""
        self.resyncing = True


def encode(envelope: Envelope) -> bytes:
    """The bytes published for ``envelope``: a short header line, then the payload as is."""
    kind = b"G" if envelope.marker else b"M"
    return b"%s%d %s\n%s" % (kind, envelope.seq, envelope.epoch.encode(), envelope.payload)


def decode(channel: str, data: bytes) -> Envelope:
    """Parse what :func:`encode` made (raises ValueError on anything else)."""
    end = data.index(b"\n")
    seq, _, epoch = data[1:end].partition(b" ")
    kind = data[:1]
    if kind not in (b"M", b"G"):
        raise ValueError(f"not a bus envelope: {data[:16]!r}")
    return Envelope(channel, int(seq), epoch.decode(), data[end + 1 :], kind == b"G")
