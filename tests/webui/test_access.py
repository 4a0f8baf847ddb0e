"""Who may open what: a table of role x route, anonymous included, and isolation between enterprises."""
from __future__ import annotations

import pytest

from webhelpers import login

# The task of ent-a (an open emission disclosure, Art. 10) is reached by URL in the table as {task}.
ROUTES = ["/", "/tasks/{task}", "/admin/", "/admin/users", "/admin/organisations", "/admin/calendar",
          "/admin/incidents", "/admin/messages", "/public/", "/public/lists", "/public/emissions",
          "/public/agencies", "/public/reviews", "/public/commendations", "/public/named",
          "/public/penalties", "/login"]

PUBLIC = {"/public/", "/public/lists", "/public/emissions", "/public/agencies", "/public/reviews",
          "/public/commendations", "/public/named", "/public/penalties"}
ADMIN = {"/admin/", "/admin/users", "/admin/organisations", "/admin/calendar", "/admin/incidents",
         "/admin/messages"}


def expected(user: str | None, route: str) -> int:
    if route in PUBLIC:
        return 200
    if route == "/login":
        return 200 if user is None else 302          # a logged-in user goes to the inbox
    if user is None:
        return 302                                    # to /login
    if route in ADMIN:
        return 200 if user == "admin" else 403
    if route == "/tasks/{task}":
        return 200 if user == "ent-a" else 403       # only the enterprise the task belongs to
    return 200


USERS = [None, "ent-a", "ent-b", "epb-650102", "epb-652300", "agency-a", "auditor", "admin"]


@pytest.mark.parametrize("user", USERS, ids=lambda u: u or "anonymous")
def test_role_route_table(app, site, user):
    site.start_disclosure("ent-a")
    task = site.open_task("ent-a")
    client = app.test_client()
    if user:
        login(client, user)
    seen = {}
    for route in ROUTES:
        response = client.get(route.format(task=task.id))
        seen[route] = response.status_code
        if response.status_code == 302 and user is None:
            assert response.headers["Location"].startswith("/login?next="), route
    assert seen == {route: expected(user, route) for route in ROUTES}


def test_anonymous_is_sent_to_login_and_back(app, site):
    client = app.test_client()
    response = client.get("/admin/users")
    assert response.status_code == 302
    assert response.headers["Location"] == "/login?next=%2Fadmin%2Fusers"
    response = client.post("/login", data={"username": "admin", "password": "demo", "next": "/admin/users"})
    assert response.headers["Location"] == "/admin/users"


def test_login_never_redirects_off_site(app, site):
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        client = app.test_client()
        response = client.post("/login", data={"username": "ent-a", "password": "demo", "next": target})
        assert response.headers["Location"] == "/", target


def test_enterprise_cannot_open_or_complete_another_enterprises_task(app, site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    task = site.open_task("ent-a")
    ent_b = as_user("ent-b")
    assert ent_b.get(f"/tasks/{task.id}").status_code == 403
    assert ent_b.post(f"/tasks/{task.id}", data=disclosure_form).status_code == 403
    assert "乌鲁木齐甲化工" not in ent_b.get("/").get_data(as_text=True)
    assert site.open_task("ent-a").id == task.id      # still open, untouched


def test_epb_of_another_jurisdiction_cannot_act(app, site, as_user, disclosure_form):
    site.start_disclosure("ent-a")
    as_user("ent-a").post(f"/tasks/{site.open_task('ent-a').id}", data=disclosure_form)
    review = site.open_task("epb-650102")
    assert review is not None
    assert as_user("epb-652300").get(f"/tasks/{review.id}").status_code == 403
    assert as_user("epb-650102").get(f"/tasks/{review.id}").status_code == 200


def test_unknown_task_is_404(as_user):
    assert as_user("ent-a").get("/tasks/00000000-0000-0000-0000-000000000000").status_code == 404


def test_start_is_refused_for_a_role_that_may_not_start(site, as_user):
    assert as_user("epb-650102").post("/start/web_fixture").status_code == 403
    assert as_user("ent-a").post("/start/no_such_process").status_code == 403


def test_logout_needs_post(as_user):
    client = as_user("ent-a")
    assert client.get("/logout").status_code == 405
    response = client.post("/logout")
    assert response.status_code == 302
    assert client.get("/").status_code == 302


def test_files_need_login(app, site):
    assert app.test_client().get("/files/1").status_code == 302


@pytest.mark.parametrize("path", ["/tasks/{task}", "/start/web_fixture", "/admin/users",
                                  "/admin/calendar", "/admin/incidents/1/retry", "/admin/messages/1/resolve"])
def test_anonymous_posts_are_sent_to_login_and_change_nothing(app, site, path):
    site.start_disclosure("ent-a")
    task = site.open_task("ent-a")
    response = app.test_client().post(path.format(task=task.id), data={"confirmed": "true"})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert site.open_task("ent-a").id == task.id


@pytest.mark.parametrize("user", ["ent-a", "epb-650102", "auditor", "agency-a"])
def test_administration_posts_are_refused_to_other_roles(site, as_user, user):
    client = as_user(user)
    before = site.user("ent-b").roles
    response = client.post(f"/admin/users/{site.user('ent-b').id}", data={"roles": ["administrator"], "active": "on"})
    assert response.status_code == 403
    assert site.user("ent-b").roles == before
    assert client.post("/admin/calendar", data={"day": "2026-01-05", "kind": "holiday"}).status_code == 403
