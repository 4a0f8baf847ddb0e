"""The web UI: login, the role inbox, task forms, administration and the public disclosure pages.

`create_app(config=None)` builds the Flask application (flaskr style). Without a config it reads
`DATABASE_URL` and `SECRET_KEY` from the environment. The app calls `engine.facade.Engine`, one
instance per app in `app.extensions["engine"]`, and never SpiffWorkflow.
"""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, Mapping, Optional

from flask import Flask

DEFAULTS: dict[str, Any] = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": False,
    "SESSION_COOKIE_NAME": "cleanaudit_session",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
    "WTF_CSRF_ENABLED": True,
    "WTF_CSRF_TIME_LIMIT": 8 * 3600,
    "BABEL_DEFAULT_LOCALE": "zh_CN",
    "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
    "LANGUAGES": ("zh_CN", "en"),
    # Login throttling (shared by every worker through the login_attempt table).
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_WINDOW_MINUTES": 15,
    # Uploads: stored in the upload table, never in task data.
    "MAX_CONTENT_LENGTH": 25 * 1024 * 1024,
    "UPLOAD_MAX_BYTES": 10 * 1024 * 1024,
    "UPLOAD_EXTENSIONS": (".pdf", ".png", ".jpg", ".jpeg", ".doc", ".docx", ".xls", ".xlsx", ".zip", ".txt"),
    "INBOX_PER_PAGE": 25,
    "PUBLIC_PER_PAGE": 50,
    "DATABASE_URL": None,
    "PROCESSES_DIR": None,
    "FORMS_DIR": None,
    "ENGINE": None,            # an engine.facade.Engine to use instead of building one (tests)
    "TRUSTED_PROXIES": 0,      # reverse proxies in front of the app (X-Forwarded-For/-Proto)
}


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def config_from_environment(instance_path: str) -> dict[str, Any]:
    """The production configuration: DATABASE_URL, SECRET_KEY, secure cookies unless told otherwise."""
    return {
        "DATABASE_URL": os.environ.get("DATABASE_URL") or None,
        "SECRET_KEY": os.environ.get("SECRET_KEY") or _instance_secret(instance_path),
        # On in production; `make run` over plain http on another host sets SESSION_COOKIE_SECURE=0.
        "SESSION_COOKIE_SECURE": _env_bool("SESSION_COOKIE_SECURE", True),
        "REMEMBER_COOKIE_SECURE": _env_bool("SESSION_COOKIE_SECURE", True),
        "PROCESSES_DIR": os.environ.get("CLEANAUDIT_PROCESSES_DIR") or None,
        "FORMS_DIR": os.environ.get("CLEANAUDIT_FORMS_DIR") or None,
        "TRUSTED_PROXIES": int(os.environ.get("CLEANAUDIT_TRUSTED_PROXIES") or 0),
    }


def _instance_secret(instance_path: str) -> str:
    """A random key kept in the instance folder, so that every worker of one site shares it."""
    path = Path(instance_path) / "secret_key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        key = secrets.token_hex(32)
        handle.write(key)
    return key


def create_app(config: Optional[Mapping[str, Any]] = None) -> Flask:
    """Build the application; `config` overrides the defaults (tests), else the environment."""
    app = Flask(__name__, instance_path=os.environ.get("CLEANAUDIT_INSTANCE_PATH")
                or str(Path.cwd() / "instance"))
    app.config.update(DEFAULTS)
    if config is None:
        app.config.update(config_from_environment(app.instance_path))
    else:
        app.config.update(config)
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("SECRET_KEY is not set")

    engine = app.config.get("ENGINE")
    if engine is None:
        from engine.facade import Engine
        engine = Engine(app.config.get("DATABASE_URL"), processes_dir=app.config.get("PROCESSES_DIR"),
                        forms_dir=app.config.get("FORMS_DIR"))
    app.extensions["engine"] = engine
    if app.config["TRUSTED_PROXIES"]:
        # login throttling counts by client address: behind a proxy, read it from the proxy's header
        from werkzeug.middleware.proxy_fix import ProxyFix
        hops = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)

    from . import access, display, errors, i18n
    i18n.init_app(app)
    access.init_app(app)
    display.init_app(app)
    errors.init_app(app)

    from . import admin, auth, inbox, public, tasks
    app.register_blueprint(auth.bp)
    app.register_blueprint(inbox.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(public.bp)
    from . import bpmnjs, history, processes
    app.register_blueprint(bpmnjs.bp)
    app.register_blueprint(history.bp)
    app.register_blueprint(processes.bp)
    return app
