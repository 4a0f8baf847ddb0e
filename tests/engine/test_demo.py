"""`cleanaudit init --demo` (engine/demo.py, engine/demo_instances.py): the demo of issues 4, 5 and 6.

One demo database is built per module from the real processes/ and forms/ (~10 s) and looked at by
the tests below; the last one loads the demo a second time.
"""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from engine.demo import USERS, load_demo
from engine.models import HumanTask, Instance, Organisation, Record, UndeliveredMessage, User
from tests.conftest import make_engine


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from werkzeug.security import generate_password_hash

    from engine.seed import init_database
    with pytest.MonkeyPatch.context() as patch:   # scrypt costs ~0.15 s a user; same code path, cheap method
        patch.setattr("engine.accounts.generate_password_hash",
                      lambda password: generate_password_hash(password, method="pbkdf2:sha256:1000"))
        engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('demo') / 'cleanaudit.sqlite'}")
        lines = init_database(engine, demo=True)
        yield engine, lines
    engine.db.dispose()


def _user(engine, username: str) -> User:
    with engine.db.read() as session:
        return session.scalar(select(User).where(User.username == username))


def _open(engine, username: str) -> list[str]:
    return sorted(row.bpmn_id for row in engine.inbox(_user(engine, username), per_page=200).rows)


def test_demo_leaves_instances_of_every_process_in_several_states(demo):
    engine, lines = demo
    with engine.db.read() as session:
        states = dict(session.execute(select(Instance.status, func.count()).group_by(Instance.status)).all())
        processes = set(session.scalars(select(Instance.process_id)))
        undelivered = session.scalar(select(func.count()).select_from(UndeliveredMessage))
    print("\ninstances by state:", states)
    assert states.get("running", 0) >= 10 and states.get("completed", 0) >= 2
    assert "incident" not in states
    assert processes >= {"mandatory_listing", "mandatory_audit", "penalty_case", "voluntary_audit", "commendation",
                         "agency_filing", "expert_enrolment"}
    assert undelivered == 0                      # every message found its instance or start event
    assert any(line.startswith("demo instances:") for line in lines)


def test_an_open_task_is_overdue_and_ent_b_is_penalised_for_it(demo):
    engine, _ = demo
    now = datetime.now(timezone.utc)
    with engine.db.read() as session:
        overdue = list(session.scalars(select(HumanTask).where(HumanTask.status == "open",
                                                                 HumanTask.due_at < now)))
    assert {(row.bpmn_id, row.enterprise_name) for row in overdue} >= {("publish_emissions", "昌吉市宏达建材有限责任公司")}
    # Art. 10, 28: the missed disclosure opened the Changji EPB's penalty case; the duty stays open.
    assert "investigate_local_epb" in _open(engine, "epb-652300")
    assert "publish_emissions" in _open(engine, "ent-b")
    assert "accept_commission" in _open(engine, "agency-a")        # ent-b commissioned agency-a


def test_ent_a_has_its_emission_disclosure_open(demo):
    engine, _ = demo
    rows = {row.bpmn_id: row for row in engine.inbox(_user(engine, "ent-a"), per_page=200).rows}
    assert set(rows) == {"publish_emissions", "commission_agency"}
    publish = rows["publish_emissions"]
    assert publish.article == "Art. 10"
    assert publish.due_at == datetime.fromisoformat("2026-12-21T23:59:59+08:00")   # listed 2026-11-20
    # The enterprise sorts first what falls due first (the browser test opens the first task).
    assert engine.inbox(_user(engine, "ent-a")).rows[0].bpmn_id == "publish_emissions"


def test_every_demo_user_but_admin_and_auditor_has_work(demo):
    engine, _ = demo
    counts = {username: engine.inbox_count(_user(engine, username)) for username, *_ in USERS}
    print("\nopen tasks per demo user:")
    for username, count in counts.items():
        print(f"  {username:<12} {count:>2}  {', '.join(_open(engine, username))}")
    idle = [username for username, count in counts.items() if count == 0 and username not in ("admin", "auditor")]
    assert idle == []


def test_voluntary_audit_is_under_review_by_the_drawn_experts(demo):
    engine, _ = demo
    for expert in ("expert-1", "expert-2", "expert-3"):
        assert _open(engine, expert) == ["review_by_expert"]
    # expert-4 works for agency-a, which ent-c commissioned: never drawn (Art. 17).
    assert _open(engine, "expert-4") == ["apply_for_enrolment"]


def test_public_pages_have_lists_a_disclosure_a_review_result_and_the_registry(demo):
    engine, _ = demo
    with engine.db.read() as session:
        kinds = dict(session.execute(select(Record.kind, func.count()).where(Record.public.is_(True))
                                     .group_by(Record.kind)).all())
        filings = dict(session.execute(select(Organisation.name, Organisation.filing_status)
                                       .where(Organisation.kind == "agency")).all())
    assert kinds.get("mandatory_list") == 2 and kinds.get("emission_disclosure") == 1
    assert kinds.get("review_result") == 1
    assert filings == {"新疆清源清洁生产技术咨询有限公司": "filed", "新疆绿洲环境工程咨询有限公司": "applying"}


def test_demo_history_verifies(demo):
    engine, _ = demo
    assert engine.verify_history() == []


def test_loading_the_demo_again_adds_nothing(demo):
    engine, _ = demo
    with engine.db.read() as session:
        before = (session.scalar(select(func.count()).select_from(Instance)),
                  session.scalar(select(func.count()).select_from(User)),
                  session.scalar(select(func.count()).select_from(Organisation)))
    lines = load_demo(engine)
    with engine.db.read() as session:
        after = (session.scalar(select(func.count()).select_from(Instance)),
                 session.scalar(select(func.count()).select_from(User)),
                 session.scalar(select(func.count()).select_from(Organisation)))
    assert after == before
    assert not any(line.startswith("demo instances:") for line in lines)
