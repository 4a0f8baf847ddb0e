"""`cleanaudit init`: create/upgrade the database, load reference data, deploy processes/."""
from __future__ import annotations

from pathlib import Path

from .accounts import seed_calendar, seed_divisions


def init_database(engine, demo: bool = False) -> list[str]:
    """Create or upgrade the schema, seed divisions and calendar, deploy every process file."""
    lines = []
    engine.create_schema()
    with engine.db.transaction() as session:
        divisions = seed_divisions(session)
        days = seed_calendar(session)
    engine.invalidate_calendar()
    lines.append(f"database ready: {engine.db.engine.url.render_as_string(hide_password=True)}")
    lines.append(f"divisions added: {divisions}; calendar days added: {days}")
    paths = sorted(Path(engine.processes_dir).glob("*.bpmn"))
    if paths:
        versions = engine.deploy_paths(paths, deployed_by="init")
        for version in versions:
            lines.append(f"deployed {version.process_id} version {version.version_no}")
    if demo:
        from .demo import load_demo
        lines.extend(load_demo(engine))
    return lines
