"""bpmn-js, served from webui/node_modules (installed by `make node`, never committed): an allow-list.

Only the prebuilt bundles, their CSS and the BPMN icon font are served; every other path is 404.
The bundles keep the bpmn.io watermark (its license requires it to stay visible).
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, send_from_directory

bp = Blueprint("bpmnjs", __name__, url_prefix="/bpmn-js")

DIST = Path(__file__).resolve().parent / "node_modules" / "bpmn-js" / "dist"

ALLOWED = frozenset({
    "bpmn-navigated-viewer.production.min.js",
    "bpmn-viewer.production.min.js",
    "bpmn-modeler.production.min.js",
    "assets/diagram-js.css",
    "assets/bpmn-js.css",
    "assets/bpmn-font/css/bpmn.css",
    "assets/bpmn-font/font/bpmn.woff2",
    "assets/bpmn-font/font/bpmn.woff",
    "assets/bpmn-font/font/bpmn.ttf",
    "assets/bpmn-font/font/bpmn.eot",
    "assets/bpmn-font/font/bpmn.svg",
})


@bp.route("/<path:name>")
def asset(name: str):
    if name not in ALLOWED or not (DIST / name).is_file():
        abort(404)
    # the version is in package-lock.json: a day of caching is safe across an upgrade
    return send_from_directory(DIST, name, max_age=86400)
