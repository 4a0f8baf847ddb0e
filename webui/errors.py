"""Engine errors and HTTP errors become pages here, in one place."""
from __future__ import annotations

import logging

from flask import Flask, g, render_template
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from engine.errors import (InstanceNotFound, InvalidFormData, NotAllowed, ProcessNotFound,
                           StaleInstance, TaskNotFound)

log = logging.getLogger(__name__)

TITLES = {
    400: _l("请求无效"),
    403: _l("无权访问"),
    404: _l("未找到"),
    405: _l("不支持的请求方式"),
    409: _l("内容已变更"),
    413: _l("文件过大"),
    422: _l("填写有误"),
    429: _l("请求过于频繁"),
    500: _l("系统错误"),
}

EXPLANATIONS = {
    400: _l("请求无法处理。请返回上一页，刷新后重试。"),
    403: _l("您没有权限访问此页面或办理此事项。"),
    404: _l("您要找的页面或事项不存在。"),
    405: _l("此地址不支持这种请求方式。"),
    409: _l("此事项已由他人办理或已发生变化，您的提交未被保存。请返回待办事项查看最新情况。"),
    413: _l("上传的文件超过允许的大小。"),
    422: _l("提交的内容有误，未被保存。"),
    429: _l("请求过于频繁，请稍后再试。"),
    500: _l("系统发生错误，您的操作未完成。请稍后再试；问题持续时请联系系统管理员。"),
}


def error_page(status: int, detail: str = ""):
    return render_template("error.html", status=status, title=TITLES.get(status, str(status)),
                           explanation=EXPLANATIONS.get(status, ""), detail=detail), status


def init_app(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        return error_page(400, _("表单已过期或缺少安全校验码，请刷新页面后重新提交。"))

    @app.errorhandler(NotAllowed)
    def not_allowed(exc):
        return error_page(403)

    @app.errorhandler(TaskNotFound)
    @app.errorhandler(InstanceNotFound)
    @app.errorhandler(ProcessNotFound)
    def not_found(exc):
        return error_page(404)

    @app.errorhandler(StaleInstance)
    def stale(exc):
        return error_page(409)

    @app.errorhandler(InvalidFormData)
    def invalid(exc):
        # A form page registers how to show itself again with the messages next to its fields.
        rerender = g.get("rerender_invalid")
        if rerender is not None:
            return rerender(exc), 422
        return error_page(422, "; ".join(f"{k}: {', '.join(v)}" for k, v in exc.errors.items()))

    @app.errorhandler(HTTPException)
    def http_error(exc):
        if exc.code is None or exc.code < 400:
            return exc
        return error_page(exc.code)

    @app.errorhandler(Exception)
    def unexpected(exc):
        if isinstance(exc, HTTPException):
            return http_error(exc)
        log.exception("unhandled error")
        if app.config.get("TESTING") and app.config.get("PROPAGATE_TEST_ERRORS", True):
            raise exc
        return error_page(500)
