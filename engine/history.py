"""The append-only, hash-chained history: hash = sha256(previous hash + canonical JSON of the event)."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from . import fastsql
from .models import ChainHead, Event

GENESIS = "0" * 64

KINDS = ("started", "task_completed", "timer_fired", "message_sent", "message_received",
         "message_undelivered", "incident", "retried", "deployed", "confidential_viewed",
         "access_refused", "cancelled", "completed", "data_changed")


def instance_chain(instance_id: int) -> str:
    return f"instance:{instance_id}"


def process_chain(process_id: str) -> str:
    return f"process:{process_id}"


def plain(data: Any) -> Any:
    """Data as plain JSON values (dates become ISO strings), so the hash survives a round trip."""
    return json.loads(plain_json(data))


def plain_json(data: Any) -> str:
    """The JSON text of plain(data)."""
    return json.dumps(data, default=_default, ensure_ascii=False)


def _default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _iso(at: datetime) -> str:
    """2025-03-01T02:03:04.000005Z (what strftime("%Y-%m-%dT%H:%M:%S.%fZ") gives, ten times faster)."""
    return at.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def canonical(event: Event) -> str:
    """The canonical JSON of an event: sorted keys, no spaces, UTC timestamp with microseconds."""
    return json.dumps({
        "chain": event.chain, "seq": event.seq, "instance_id": event.instance_id,
        "task_id": event.task_id, "bpmn_id": event.bpmn_id, "actor": event.actor,
        "kind": event.kind, "data": event.data, "at": _iso(event.at),
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def compute_hash(prev_hash: str, event: Event) -> str:
    return hashlib.sha256((prev_hash + canonical(event)).encode("utf-8")).hexdigest()


_HEADS = ChainHead.__table__
_EVENTS = Event.__table__
# Built once: a statement built per call costs more than running it (cache keys of its values).
_READ_HEAD = (select(_HEADS.c.last_hash, _HEADS.c.count)
              .where(_HEADS.c.chain == bindparam("chain")).with_for_update())
_INSERT_EVENT = insert(_EVENTS)
_INSERT_HEAD = insert(_HEADS)
_MOVE_HEAD = (update(_HEADS).where(_HEADS.c.chain == bindparam("head_chain"))
              .values(last_hash=bindparam("head_hash"), count=bindparam("head_count")))
# Moves the head only if it is still where this process last left it (see append)
_MOVE_KNOWN_HEAD = (update(_HEADS).where(_HEADS.c.chain == bindparam("head_chain"),
                                         _HEADS.c.count == bindparam("old_count"),
                                         _HEADS.c.last_hash == bindparam("old_hash"))
                    .values(last_hash=bindparam("head_hash"), count=bindparam("head_count")))
# The heads this process wrote last, per chain: most appends follow one by the same process (the
# steps of one instance), and then the head need not be read first. Only a hint: the conditional
# UPDATE finds out when another process (or a rolled-back transaction) moved it meanwhile.
_known_heads: dict[str, tuple[str, int]] = {}
_KNOWN_HEADS_MAX = 50_000


def append(session: Session, *, chain: str, kind: str, actor: str, at: datetime,
           instance_id: Optional[int] = None, task_id: Optional[str] = None,
           bpmn_id: Optional[str] = None, data: Optional[dict] = None, is_plain: bool = False) -> "Appended":
    """Append one event to a chain and move the chain head, inside the caller's transaction.

    Core statements (move the head, insert the event; read and lock the head first unless this
    process knows where it is): this runs on every user action, and the ORM's unit of work would
    add an autoflush and object bookkeeping. Returns the values appended (not an ORM object).
    """
    # Microseconds survive every backend; anything finer would break the hash on reload.
    at = at.astimezone(timezone.utc)
    data = (data or {}) if is_plain else plain(data or {})  # is_plain: the caller made it plain()

    def make(last_hash: str, count: int) -> "Appended":
        event = Appended(chain=chain, seq=count + 1, instance_id=instance_id, task_id=task_id,
                         bpmn_id=bpmn_id, actor=actor, kind=kind, data=data, at=at, prev_hash=last_hash)
        event.hash = compute_hash(last_hash, event)
        return event

    known = _known_heads.get(chain)
    event = None
    if known is not None:
        event = make(*known)
        moved = fastsql.execute(session, _MOVE_KNOWN_HEAD, {
            "head_chain": chain, "old_count": known[1], "old_hash": known[0],
            "head_hash": event.hash, "head_count": event.seq}).rowcount
        if moved != 1:
            event = None  # moved meanwhile: read it (and lock it) as below
    if event is None:
        found = fastsql.execute(session, _READ_HEAD, {"chain": chain}).fetchone()
        event = make(GENESIS, 0) if found is None else make(found[0], found[1])
        if found is None:
            fastsql.execute(session, _INSERT_HEAD, {"chain": chain, "last_hash": event.hash, "count": event.seq})
        else:
            fastsql.execute(session, _MOVE_HEAD, {"head_chain": chain, "head_hash": event.hash,
                                                  "head_count": event.seq})
    fastsql.execute(session, _INSERT_EVENT, {
        "chain": chain, "seq": event.seq, "instance_id": instance_id, "task_id": task_id,
        "bpmn_id": bpmn_id, "actor": actor, "kind": kind, "data": event.data, "at": at,
        "prev_hash": event.prev_hash, "hash": event.hash})
    if len(_known_heads) >= _KNOWN_HEADS_MAX:
        _known_heads.clear()
    _known_heads[chain] = (event.hash, event.seq)
    return event


@dataclass
class Appended:
    """An event as appended (the row's values; not an ORM object: building one costs more)."""
    chain: str
    seq: int
    instance_id: Optional[int]
    task_id: Optional[str]
    bpmn_id: Optional[str]
    actor: str
    kind: str
    data: Any
    at: datetime
    prev_hash: str
    hash: str = ""


@dataclass
class Break:
    chain: str
    seq: Optional[int]
    event_id: Optional[int]
    message: str

    def __str__(self) -> str:
        where = f"event #{self.event_id} (seq {self.seq})" if self.event_id else "chain head"
        return f"{self.chain}: {where}: {self.message}"


def verify(session: Session, chain: Optional[str] = None) -> list[Break]:
    """Check every chain (or one): sequence, links, hashes, and the separately kept head."""
    breaks: list[Break] = []
    heads = {h.chain: h for h in session.scalars(
        select(ChainHead).where(ChainHead.chain == chain) if chain else select(ChainHead))}
    chains_query = select(Event.chain).distinct()
    if chain:
        chains_query = chains_query.where(Event.chain == chain)
    chains = set(session.scalars(chains_query)) | set(heads)
    for name in sorted(chains):
        prev, expected_seq, last_event = GENESIS, 1, None
        for event in session.scalars(select(Event).where(Event.chain == name).order_by(Event.seq)):
            if event.seq != expected_seq:
                breaks.append(Break(name, event.seq, event.id,
                                    f"sequence gap: expected {expected_seq}, found {event.seq} (an event was deleted or inserted)"))
                break
            if event.prev_hash != prev:
                breaks.append(Break(name, event.seq, event.id, "previous-hash link broken"))
                break
            if compute_hash(prev, event) != event.hash:
                breaks.append(Break(name, event.seq, event.id, "content does not match its hash (edited)"))
                break
            prev, expected_seq, last_event = event.hash, expected_seq + 1, event
        else:
            head = heads.get(name)
            count = expected_seq - 1
            if head is None:
                breaks.append(Break(name, None, None, "events without a chain head"))
            elif head.count != count or head.last_hash != prev:
                breaks.append(Break(name, None, None,
                                    f"head says {head.count} events ending {head.last_hash[:12]}, "
                                    f"found {count} ending {prev[:12]} (last events deleted or appended)"))
    return breaks


def count_events(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Event)) or 0
