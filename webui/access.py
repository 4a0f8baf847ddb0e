"""Who is logged in (flask-login), what they may open, and the engine of this app."""
from __future__ import annotations

import hashlib
from functools import wraps
from typing import Callable, Optional

from flask import Flask, abort, current_app, g
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, UserMixin, current_user, login_required
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import select

login_manager = LoginManager()
csrf = CSRFProtect()


def get_engine():
    """The engine.facade.Engine of this app."""
    return current_app.extensions["engine"]


class LoginUser(UserMixin):
    """A logged-in user: wraps engine.models.User (passed to the engine as `.model`)."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

    def get_id(self) -> str:
        # A password reset or a disabled account ends every session of that user.
        return f"{self.model.id}:{fingerprint(self.model.password_hash)}"

    @property
    def is_active(self) -> bool:
        return bool(self.model.active)

    @property
    def roles(self) -> list[str]:
        return list(self.model.roles or [])

    def has_role(self, role: str) -> bool:
        return self.model.has_role(role)


def fingerprint(password_hash: str) -> str:
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:16]


@login_manager.user_loader
def load_user(user_id: str) -> Optional[LoginUser]:
    from engine.models import User
    raw_id, _, mark = user_id.partition(":")
    if not raw_id.isdigit():
        return None
    with get_engine().db.read() as session:
        user = session.scalar(select(User).where(User.id == int(raw_id)))
    if user is None or not user.active or fingerprint(user.password_hash) != mark:
        return None
    return LoginUser(user)


def roles_required(*roles: str) -> Callable:
    """Login required, and one of the roles (403 otherwise)."""
    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not any(current_user.has_role(role) for role in roles):
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorator


def inbox_count() -> int:
    """Open tasks of the current user, counted once per request for the header."""
    if not current_user.is_authenticated:
        return 0
    if "inbox_count" not in g:
        g.inbox_count = get_engine().inbox_count(current_user.model)
    return g.inbox_count


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = _l("请先登录。")
    login_manager.login_message_category = "info"
    login_manager.session_protection = "basic"
    csrf.init_app(app)
    app.jinja_env.globals.update(inbox_count=inbox_count)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
        if current_user.is_authenticated:
            response.headers.setdefault("Cache-Control", "no-store")
        return response
