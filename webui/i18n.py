"""Languages: zh-CN by default, English on request (Flask-Babel); names of roles and articles."""
from __future__ import annotations

import re

from flask import Flask, current_app, request, session
from flask_babel import Babel, get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user

ROLE_NAMES = {
    "enterprise": _l("企业"),
    "consultancy": _l("审核咨询服务机构"),
    "local_epb": _l("地县环境保护部门"),
    "local_drc": _l("地县发展改革部门"),
    "local_etc": _l("地县经贸部门"),
    "regional_epb": _l("自治区环境保护局"),
    "regional_drc": _l("自治区发展和改革委员会"),
    "regional_etc": _l("自治区经贸委"),
    "expert": _l("清洁生产专家"),
    "national": _l("国家主管部门"),
    "administrator": _l("系统管理员"),
    "process_owner": _l("流程负责人"),
    "auditor": _l("审计员"),
}

_DIGITS = "零一二三四五六七八九"


def chinese_number(n: int) -> str:
    """1 -> 一, 10 -> 十, 12 -> 十二, 20 -> 二十, 33 -> 三十三 (article numbers, below 100)."""
    if n < 10:
        return _DIGITS[n]
    tens, ones = divmod(n, 10)
    if n >= 100:
        return str(n)
    return ("" if tens == 1 else _DIGITS[tens]) + "十" + ("" if ones == 0 else _DIGITS[ones])


_ARTICLE = re.compile(r"^\s*Arts?\.?\s*(\d+(?:\s*(?:,|，|、|and|&)\s*\d+)*)\s*$", re.IGNORECASE)


def article_label(article: str | None) -> str:
    """'Art. 10' -> '第十条', 'Art. 15, 19' -> '第十五条、第十九条' in Chinese; English unchanged."""
    if not article:
        return ""
    match = _ARTICLE.match(article)
    if not match:
        return article
    numbers = [int(n) for n in re.findall(r"\d+", match.group(1))]
    if lang() == "en":
        return ("Art. " if len(numbers) == 1 else "Arts. ") + ", ".join(str(n) for n in numbers)
    return "、".join(f"第{chinese_number(n)}条" for n in numbers)


def role_name(role: str) -> str:
    return str(ROLE_NAMES.get(role, role))


def lang() -> str:
    """The engine's language code for this request: 'en' or 'zh'."""
    locale = get_locale()
    return "en" if locale is not None and locale.language == "en" else "zh"


def select_locale() -> str:
    """The session's choice, else the user's saved language, else zh-CN."""
    choice = session.get("lang")
    if choice in current_app.config["LANGUAGES"]:
        return choice
    if getattr(current_user, "is_authenticated", False):
        saved = getattr(current_user, "language", None)
        if saved in current_app.config["LANGUAGES"]:
            return saved
    return current_app.config["BABEL_DEFAULT_LOCALE"]


def html_lang() -> str:
    return "en" if lang() == "en" else "zh-CN"


def init_app(app: Flask) -> None:
    Babel(app, locale_selector=select_locale)
    app.jinja_env.globals.update(lang=lang, html_lang=html_lang, role_name=role_name,
                                 article_label=article_label)
    app.jinja_env.filters["article"] = article_label
    app.jinja_env.filters["role"] = role_name
    # request is imported for templates that build "next" links
    app.jinja_env.globals["request"] = request
