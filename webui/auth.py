"""Login (throttled), logout and the language switch."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from flask import (Blueprint, current_app, flash, redirect, render_template, request, session,
                   url_for)
from flask_babel import gettext as _
from flask_login import current_user, login_user, logout_user
from sqlalchemy import delete, func, select

from engine import clock
from engine.accounts import find_user, hash_password, verify_password
from engine.models import LoginAttempt, User

from .access import LoginUser, get_engine

bp = Blueprint("auth", __name__)


def safe_next(target: str | None, default: str) -> str:
    """Only a path on this site (never //host or a scheme) is followed after login."""
    if not target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return default
    return target


def client_address() -> str:
    return (request.remote_addr or "unknown")[:64]


def _recent_failures(session, username: str, address: str) -> tuple[int, int]:
    since = clock.now() - timedelta(minutes=current_app.config["LOGIN_WINDOW_MINUTES"])
    by_user = session.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.username == username, LoginAttempt.at >= since)) or 0
    by_address = session.scalar(select(func.count()).select_from(LoginAttempt).where(
        LoginAttempt.address == address, LoginAttempt.at >= since)) or 0
    return by_user, by_address


_dummy_hash: list[str] = []


def _spend_a_hash(password: str) -> None:
    from werkzeug.security import check_password_hash
    if not _dummy_hash:
        _dummy_hash.append(hash_password("not-a-password"))
    check_password_hash(_dummy_hash[0], password)


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for("inbox.index"))
    next_url = request.values.get("next", "")
    if request.method == "GET":
        return render_template("login.html", next_url=next_url, username="")
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    address = client_address()
    limit = current_app.config["LOGIN_MAX_FAILURES"]
    minutes = current_app.config["LOGIN_WINDOW_MINUTES"]
    engine = get_engine()
    with engine.db.transaction() as db:
        by_user, by_address = _recent_failures(db, username, address)
        if by_user >= limit or by_address >= limit:
            message = _("登录失败次数过多。为保护账户安全，请 %(minutes)d 分钟后再试。", minutes=minutes)
            return render_template("login.html", next_url=next_url, username=username,
                                   error=message), 429
        user = find_user(db, username) if username else None
        if user is None:
            _spend_a_hash(password)    # an unknown name answers as slowly as a wrong password
        ok = user is not None and verify_password(user, password)
        if not ok:
            db.add(LoginAttempt(username=username or "-", address=address, at=clock.now()))
            # failures older than the window count for nothing: keep the table small
            db.execute(delete(LoginAttempt).where(
                LoginAttempt.at < clock.now() - timedelta(minutes=minutes)))
        else:
            # a success forgets this user's failures (the address keeps its own count)
            db.execute(delete(LoginAttempt).where(LoginAttempt.username == username))
    if not ok:
        return render_template("login.html", next_url=next_url, username=username,
                               error=_("用户名或密码不正确。")), 200
    if not user.active:
        return render_template("login.html", next_url=next_url, username=username,
                               error=_("该账户已停用，请联系系统管理员。")), 403
    # a new session on login; a language chosen on the login page wins over the saved one
    chosen = session.get("lang") or user.language
    session.clear()
    if chosen in current_app.config["LANGUAGES"]:
        session["lang"] = chosen
    login_user(LoginUser(user))
    session.permanent = True
    return redirect(safe_next(next_url, url_for("inbox.index")))


@bp.route("/logout", methods=["POST"])
def logout():
    lang = session.get("lang")
    logout_user()
    session.clear()
    if lang:
        session["lang"] = lang
    flash(_("您已安全退出。"), "info")
    return redirect(url_for("auth.login"))


@bp.route("/language", methods=["POST"])
def language():
    """Switch between zh-CN and English; remembered in the session and for the user."""
    choice = request.form.get("lang", "")
    if choice in current_app.config["LANGUAGES"]:
        session["lang"] = choice
        if current_user.is_authenticated:
            with get_engine().db.transaction() as db:
                user = db.get(User, current_user.model.id)
                if user is not None:
                    user.language = choice
            current_user.model.language = choice
    return redirect(safe_next(request.form.get("next"), url_for("inbox.index")))
