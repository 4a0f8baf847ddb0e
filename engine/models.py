"""SQLAlchemy 2.0 typed models: versions, instances, inbox rows, history, organisations and users."""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Any, Optional

from sqlalchemy import (JSON, Boolean, Date, DateTime, ForeignKey, Index, Integer, LargeBinary,
                        String, Text, TypeDecorator, UniqueConstraint)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator):
    """Aware datetimes stored as UTC; SQLite drops the offset, so it is restored on load."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} refused: store aware datetimes")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Division(Base):
    """An administrative division (GB/T 2260 code)."""

    __tablename__ = "division"
    code: Mapped[str] = mapped_column(String(6), primary_key=True)
    parent: Mapped[Optional[str]] = mapped_column(String(6))
    level: Mapped[str] = mapped_column(String(16))
    name_zh: Mapped[str] = mapped_column(String(100))
    name_en: Mapped[str] = mapped_column(String(100))


class Organisation(Base):
    """An enterprise or an audit agency (consultancy)."""

    __tablename__ = "organisation"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)  # enterprise | agency
    name: Mapped[str] = mapped_column(String(200))
    credit_code: Mapped[str] = mapped_column(String(18), unique=True)
    division_code: Mapped[str] = mapped_column(ForeignKey("division.code"))
    industry_code: Mapped[Optional[str]] = mapped_column(String(8))
    is_central: Mapped[bool] = mapped_column(Boolean, default=False)
    legal_representative: Mapped[Optional[str]] = mapped_column(String(100))
    address: Mapped[Optional[str]] = mapped_column(String(300))
    contact: Mapped[Optional[str]] = mapped_column(String(200))
    # Audit agencies only (Art. 15, 19): none | applying | filed | revoked
    filing_status: Mapped[str] = mapped_column(String(16), default="none")
    filing_number: Mapped[Optional[str]] = mapped_column(String(40))
    filed_at: Mapped[Optional[datetime]] = mapped_column()


class User(Base):
    """A person who logs in; roles are lane names, scope comes from jurisdiction and organisation."""

    __tablename__ = "app_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(300), default="")
    roles: Mapped[list[str]] = mapped_column(default=list)
    jurisdiction_code: Mapped[Optional[str]] = mapped_column(ForeignKey("division.code"))
    organisation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organisation.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    language: Mapped[Optional[str]] = mapped_column(String(8))
    organisation: Mapped[Optional[Organisation]] = relationship(lazy="joined")

    def scope_keys(self) -> list[str]:
        from .authz import scope_keys
        return scope_keys(self.username, self.jurisdiction_code, self.organisation_id)

    def has_role(self, role: str) -> bool:
        return role in (self.roles or [])


class ProcessVersion(Base):
    """One deployed revision of a process; the serialized spec is stored here once."""

    __tablename__ = "process_version"
    __table_args__ = (UniqueConstraint("process_id", "version_no"),
                      UniqueConstraint("process_id", "content_hash"))
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(100), index=True)
    version_no: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(300), default="")
    content_hash: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(300))
    bpmn_xml: Mapped[str] = mapped_column(Text)
    spec_json: Mapped[str] = mapped_column(Text)
    called_process_ids: Mapped[list[str]] = mapped_column(default=list)
    start_messages: Mapped[list[str]] = mapped_column(default=list)
    deployed_by: Mapped[str] = mapped_column(String(64))
    deployed_at: Mapped[datetime] = mapped_column()


class Instance(Base):
    """A stored workflow: state without the spec, pinned versions, lock version and timer index."""

    __tablename__ = "instance"
    id: Mapped[int] = mapped_column(primary_key=True)
    process_id: Mapped[str] = mapped_column(String(100), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("process_version.id"), index=True)
    called_versions: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True)  # running|completed|incident|cancelled
    state: Mapped[bytes] = mapped_column(LargeBinary)
    serializer_version: Mapped[str] = mapped_column(String(16))
    lock_version: Mapped[int] = mapped_column(Integer, default=1)
    next_timer_at: Mapped[Optional[datetime]] = mapped_column(index=True)
    title: Mapped[str] = mapped_column(String(300), default="")
    enterprise_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organisation.id"), index=True)
    jurisdiction_code: Mapped[Optional[str]] = mapped_column(String(6), index=True)
    business_key: Mapped[Optional[str]] = mapped_column(String(100), index=True)
    started_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(index=True)
    updated_at: Mapped[datetime] = mapped_column()
    completed_at: Mapped[Optional[datetime]] = mapped_column()
    incident_task: Mapped[Optional[str]] = mapped_column(String(100))
    incident_error: Mapped[Optional[str]] = mapped_column(Text)

    __mapper_args__ = {"version_id_col": lock_version}


class HumanTask(Base):
    """An inbox row: one ready user task, kept in step with the workflow on every save."""

    __tablename__ = "human_task"
    __table_args__ = (
        # The inbox: one index range per (lane, scope) pair, already in due order, covering the count
        # and the process / overdue filters (see Engine.inbox).
        Index("ix_human_task_inbox", "status", "lane", "scope", "due_at", "created_at", "process_id"),
        Index("ix_human_task_instance_status", "instance_id", "status"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the SpiffWorkflow task id
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"))
    process_id: Mapped[str] = mapped_column(String(100))
    bpmn_id: Mapped[str] = mapped_column(String(100))
    title: Mapped[str] = mapped_column(String(300))
    lane: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(String(80))
    form: Mapped[Optional[str]] = mapped_column(String(300))
    form_process_id: Mapped[str] = mapped_column(String(100))
    article: Mapped[Optional[str]] = mapped_column(String(100))
    enterprise_name: Mapped[Optional[str]] = mapped_column(String(200))
    due_at: Mapped[Optional[datetime]] = mapped_column()
    status: Mapped[str] = mapped_column(String(16), default="open")  # open|completed|cancelled
    created_at: Mapped[datetime] = mapped_column()
    completed_at: Mapped[Optional[datetime]] = mapped_column()
    completed_by: Mapped[Optional[str]] = mapped_column(String(64))


class MessageWait(Base):
    """A message an instance is waiting for, with the correlation values it expects."""

    __tablename__ = "message_wait"
    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    message_name: Mapped[str] = mapped_column(String(200), index=True)
    correlations: Mapped[dict[str, Any]] = mapped_column(default=dict)


class UndeliveredMessage(Base):
    """A message no instance or start event caught: kept, visible, never dropped."""

    __tablename__ = "undelivered_message"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    correlations: Mapped[dict[str, Any]] = mapped_column(default=dict)
    source_instance_id: Mapped[Optional[int]] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column()
    resolved_at: Mapped[Optional[datetime]] = mapped_column()


class Event(Base):
    """One append-only history record, hash-chained within its chain."""

    __tablename__ = "event"
    # (chain, seq) is unique: its index serves look-ups by chain, an instance's events included (an
    # index on chain alone, or on instance_id, only cost a page write per event)
    __table_args__ = (UniqueConstraint("chain", "seq"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    chain: Mapped[str] = mapped_column(String(120))
    seq: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[Optional[int]] = mapped_column(Integer)  # (an instance's events: its chain)
    task_id: Mapped[Optional[str]] = mapped_column(String(36))
    bpmn_id: Mapped[Optional[str]] = mapped_column(String(100))
    actor: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    at: Mapped[datetime] = mapped_column()
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class ChainHead(Base):
    """The last hash and count of a chain, kept apart so a deleted last event is caught too."""

    __tablename__ = "chain_head"
    chain: Mapped[str] = mapped_column(String(120), primary_key=True)
    last_hash: Mapped[str] = mapped_column(String(64))
    count: Mapped[int] = mapped_column(Integer)


class CalendarDay(Base):
    """An administrator-editable holiday (holiday) or adjusted working day (workday)."""

    __tablename__ = "calendar_day"
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")


class Record(Base):
    """Bulky or growing business data kept out of task data (pollutant tables, registers, documents)."""

    __tablename__ = "record"
    # the public pages list one kind of published record: one index (kind, public), not one each
    __table_args__ = (Index("ix_record_kind_public", "kind", "public"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(60))
    instance_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    enterprise_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    confidential: Mapped[bool] = mapped_column(Boolean, default=False)
    title: Mapped[str] = mapped_column(String(300), default="")
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column()
    created_by: Mapped[str] = mapped_column(String(64), default="engine")


class LoginAttempt(Base):
    """A failed login, for throttling by user name and by address (shared by every web worker)."""

    __tablename__ = "login_attempt"
    __table_args__ = (Index("ix_login_attempt_username_at", "username", "at"),
                      Index("ix_login_attempt_address_at", "address", "at"))
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column()


class Upload(Base):
    """An uploaded file, stored outside task data; task data keeps its id."""

    __tablename__ = "upload"
    id: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int] = mapped_column(Integer)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    instance_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    enterprise_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    uploaded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column()


class Expert(Base):
    """A member of a cleaner-production expert pool (Art. 21): the regional pool ("650000") or a
    prefecture's own; organisation and specialities (GB/T 4754 divisions) serve the conflict and
    speciality checks of the random draw for an expert review (Art. 17)."""

    __tablename__ = "expert"
    __table_args__ = (UniqueConstraint("username", "pool"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(100))
    title: Mapped[Optional[str]] = mapped_column(String(100))
    organisation_name: Mapped[str] = mapped_column(String(200), default="")
    organisation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("organisation.id"))
    specialities: Mapped[list[str]] = mapped_column(default=list)
    pool: Mapped[str] = mapped_column(String(6), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    enrolled_at: Mapped[datetime] = mapped_column()
    enrolled_by: Mapped[str] = mapped_column(String(64), default="engine")
    instance_id: Mapped[Optional[int]] = mapped_column(Integer)


class AccessGrant(Base):
    """A person allowed to see one instance's confidential audit data beyond the standing rules
    (Art. 20, 30): the experts drawn for its review. Checked by engine.confidential."""

    __tablename__ = "access_grant"
    __table_args__ = (UniqueConstraint("instance_id", "username"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    instance_id: Mapped[int] = mapped_column(Integer, index=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(60), default="")
    granted_at: Mapped[datetime] = mapped_column()
    granted_by: Mapped[str] = mapped_column(String(64), default="engine")
