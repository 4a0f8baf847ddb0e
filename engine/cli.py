"""The `cleanaudit` command line: validate, deploy, init, serve, tick, worker, verify-history, layout, bench."""
from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from .facade import PROJECT_ROOT


def _engine(args):
    from .facade import Engine
    return Engine(getattr(args, "database_url", None) or None,
                  timer_processes=getattr(args, "timer_processes", None) or 1)


def cmd_validate(args) -> int:
    """Exit 0 when every file is deployable (warnings allowed), 1 otherwise."""
    from .validate import validate_files
    files = []
    for name in args.files:
        path = Path(name)
        try:
            files.append((path.name, path.read_bytes()))
        except OSError as exc:
            print(f"{name}:?: -: cannot read file: {exc.strerror or exc}")
            return 1
    known = set()
    if args.with_deployed:
        from sqlalchemy import select
        from .models import ProcessVersion
        try:
            with _engine(args).db.read() as session:
                known = set(session.scalars(select(ProcessVersion.process_id).distinct()))
        except Exception:
            known = set()
    report = validate_files(files, forms_dir=Path(args.forms), known_process_ids=known)
    for problem in report.problems:
        print(problem)
    errors, warnings = len(report.errors), len(report.warnings)
    print(f"{len(files)} file(s): {errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_deploy(args) -> int:
    from .errors import InvalidProcess
    engine = _engine(args)
    engine.create_schema()
    try:
        versions = engine.deploy_paths(args.files, deployed_by=args.user)
    except InvalidProcess as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    for version in versions:
        print(f"{version.process_id}: version {version.version_no} ({version.content_hash[:12]})")
    return 0


def cmd_init(args) -> int:
    from .seed import init_database
    engine = _engine(args)
    summary = init_database(engine, demo=args.demo)
    for line in summary:
        print(line)
    return 0


def _ensure_secret_key() -> None:
    """Every worker must sign sessions with the same key: keep one under instance/ in development."""
    if os.environ.get("SECRET_KEY"):
        return
    import secrets
    path = Path("instance") / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    os.environ["SECRET_KEY"] = path.read_text().strip()


def _start_ticker(database_url) -> "subprocess.Popen":
    """Fire due timers every minute in a `cleanaudit worker` process of its own.

    A thread would be copied into gunicorn's forked workers holding its locks (they then hang).
    """
    import subprocess
    command = [sys.executable, "-m", "engine.cli"]
    if database_url:
        command += ["--database-url", database_url]
    return subprocess.Popen(command + ["worker"])


def cmd_serve(args) -> int:
    """Serve the web app with gunicorn (2 workers) and tick timers every minute."""
    _ensure_secret_key()
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            self.cfg.set("bind", f"{args.host}:{args.port}")
            self.cfg.set("workers", args.workers)
            self.cfg.set("accesslog", "-")
            self.cfg.set("timeout", 60)

        def load(self):
            from webui import create_app
            app = create_app()
            from .runtime import tune_gc
            tune_gc()
            return app

    ticker = None if args.no_timers else _start_ticker(args.database_url)
    print(f"cleanaudit: serving http://{args.host}:{args.port}/", flush=True)
    try:
        Server().run()
    finally:
        if ticker is not None:
            ticker.terminate()
            ticker.wait(10)
    return 0


def _parse_now(text: Optional[str]) -> datetime:
    if not text:
        from . import clock
        return clock.now()
    when = datetime.fromisoformat(text if "T" in text else text + "T00:00:00+08:00")
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when


def cmd_tick(args) -> int:
    engine = _engine(args)
    try:
        results = engine.tick(_parse_now(args.now))
    finally:
        engine.shutdown_timer_processes()
    for result in results:
        fired = ", ".join(result.fired_timers) or "(nothing due after all)"
        print(f"instance {result.instance_id}: fired {fired} -> {result.status}"
              + (f" (incident: {result.incident})" if result.incident else ""))
    print(f"{len(results)} instance(s) ticked", file=sys.stderr)
    return 0


def _exit_on_sigterm() -> None:
    """SIGTERM (what `serve` and service managers stop the worker with) ends it as Ctrl-C does, so
    that its helper processes are shut down with it."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, stop)


def cmd_worker(args) -> int:
    _exit_on_sigterm()
    engine = _engine(args)
    from .runtime import tune_gc
    tune_gc()
    helpers = engine.start_timer_processes()
    print("worker: ticking every minute; Ctrl-C stops"
          + (f" ({helpers} processes fire large sweeps)" if helpers else ""), file=sys.stderr)
    try:
        while True:
            try:
                for result in engine.tick():
                    print(f"instance {result.instance_id}: fired {', '.join(result.fired_timers)}", flush=True)
            except Exception as exc:  # a failed tick is reported and retried next minute, not fatal
                print(f"worker: tick failed: {exc}", file=sys.stderr, flush=True)
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        engine.shutdown_timer_processes()


def cmd_verify_history(args) -> int:
    engine = _engine(args)
    breaks = engine.verify_history()
    if not breaks:
        from sqlalchemy import select, func
        from .models import ChainHead
        with engine.db.read() as session:
            chains = session.scalar(select(func.count()).select_from(ChainHead)) or 0
            events = session.scalar(select(func.sum(ChainHead.count))) or 0
        print(f"history intact: {chains} chain(s), {events} event(s)")
        return 0
    for item in breaks:
        print(f"BROKEN {item}")
    return 1


def cmd_layout(args) -> int:
    """Add diagram interchange (BPMN DI) to BPMN files, in place (engine.layout)."""
    from .layout import layout_paths
    return layout_paths(args.files, check=args.check, force=args.force, forms_dir=Path(args.forms))


def cmd_bench(args) -> int:
    from .bench import main as bench_main
    return bench_main(quick=args.quick)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cleanaudit", description=__doc__)
    parser.add_argument("--database-url", help="overrides DATABASE_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="validate BPMN files (exit 0 deployable, 1 not)")
    p.add_argument("files", nargs="+")
    p.add_argument("--forms", default=str(PROJECT_ROOT / "forms"), help="the forms folder")
    p.add_argument("--with-deployed", action="store_true",
                   help="accept call activities to processes deployed in the database")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("deploy", help="validate, then store new versions")
    p.add_argument("files", nargs="+")
    p.add_argument("--user", default=os.environ.get("USER", "cli"))
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("init", help="create/upgrade the database and deploy processes/")
    p.add_argument("--demo", action="store_true", help="load demo users, organisations and instances")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("serve", help="serve the web app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--no-timers", action="store_true", help="do not tick timers in this process")
    p.set_defaults(func=cmd_serve)

    from .facade import Engine, default_timer_processes
    processes_help = (f"processes that fire a sweep of {Engine.POOL_MIN_DUE}+ due timers together "
                      f"(default: one per core, at most 4; here {default_timer_processes()})")
    p = sub.add_parser("tick", help="fire due timers once")
    p.add_argument("--now", help="ISO date/time to use as now")
    p.add_argument("--timer-processes", type=int, default=default_timer_processes(), help=processes_help)
    p.set_defaults(func=cmd_tick)

    p = sub.add_parser("worker", help="tick every minute")
    p.add_argument("--interval", type=float, default=60.0)
    p.add_argument("--timer-processes", type=int, default=default_timer_processes(), help=processes_help)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("verify-history", help="check every hash chain of the history")
    p.set_defaults(func=cmd_verify_history)

    p = sub.add_parser("layout", help="add diagram interchange (BPMN DI) to files without it, in place")
    p.add_argument("files", nargs="+")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 listing files without complete DI")
    p.add_argument("--force", action="store_true", help="replace existing DI")
    p.add_argument("--forms", default=str(PROJECT_ROOT / "forms"), help="the forms folder (for the validation check)")
    p.set_defaults(func=cmd_layout)

    p = sub.add_parser("bench", help="measure what users feel, against this machine's floor")
    p.add_argument("--quick", action="store_true")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # `validate` and `deploy` promise exit codes 0 or 1 only, usage errors included.
        if exc.code not in (0, None) and any(word in argv for word in ("validate", "deploy")):
            return 1
        raise
    if args.command == "validate":
        try:
            return args.func(args)
        except Exception as exc:  # exit codes are 0 or 1, never another
            print(f"-:?: -: validation failed: {exc}")
            return 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
