"""Login: hashed passwords, throttling, cookie flags, disabled accounts, sessions ended by a reset."""
from __future__ import annotations

from webhelpers import login, make_app


def test_login_success_redirects_to_the_inbox_and_shows_the_count(app, site):
    site.start_disclosure("ent-a")
    client = app.test_client()
    response = client.post("/login", data={"username": "ent-a", "password": "demo"})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    html = client.get("/").get_data(as_text=True)
    assert 'id="inbox-count">1<' in html


def test_wrong_password_is_refused_without_saying_which_part_was_wrong(app, site):
    response = app.test_client().post("/login", data={"username": "ent-a", "password": "nope"})
    assert response.status_code == 200
    assert "用户名或密码不正确" in response.get_data(as_text=True)
    response = app.test_client().post("/login", data={"username": "nobody", "password": "nope"})
    assert "用户名或密码不正确" in response.get_data(as_text=True)


def test_session_cookie_is_httponly_and_samesite_lax(app, site):
    response = app.test_client().post("/login", data={"username": "ent-a", "password": "demo"})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie                     # tests run over http


def test_secure_cookie_is_configurable_and_on_in_production(site, monkeypatch, tmp_path):
    app = make_app(site, SESSION_COOKIE_SECURE=True)
    response = app.test_client().post("/login", data={"username": "ent-a", "password": "demo"})
    assert "Secure" in response.headers["Set-Cookie"]
    from webui import config_from_environment
    monkeypatch.delenv("SESSION_COOKIE_SECURE", raising=False)
    monkeypatch.setenv("SECRET_KEY", "from-env")
    assert config_from_environment(str(tmp_path))["SESSION_COOKIE_SECURE"] is True
    assert config_from_environment(str(tmp_path))["SECRET_KEY"] == "from-env"
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "0")
    assert config_from_environment(str(tmp_path))["SESSION_COOKIE_SECURE"] is False


def test_create_app_reads_database_url_and_secret_key_from_the_environment(site, monkeypatch, tmp_path):
    from webui import create_app
    url = str(site.engine.db.engine.url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "env-secret")
    monkeypatch.setenv("CLEANAUDIT_PROCESSES_DIR", str(tmp_path))
    monkeypatch.setenv("CLEANAUDIT_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app()
    assert app.config["SECRET_KEY"] == "env-secret"
    assert app.extensions["engine"].db.url == url
    app.config.update(SESSION_COOKIE_SECURE=False, WTF_CSRF_ENABLED=False)
    assert login(app.test_client(), "ent-a")


def test_secret_key_is_kept_in_the_instance_folder_when_not_given(monkeypatch, tmp_path):
    from webui import config_from_environment
    monkeypatch.delenv("SECRET_KEY", raising=False)
    first = config_from_environment(str(tmp_path))["SECRET_KEY"]
    assert len(first) == 64
    assert config_from_environment(str(tmp_path))["SECRET_KEY"] == first   # every worker shares it


def test_five_failures_throttle_the_user_for_fifteen_minutes(app, site, clock):
    client = app.test_client()
    for _ in range(5):
        assert client.post("/login", data={"username": "ent-a", "password": "bad"}).status_code == 200
    response = client.post("/login", data={"username": "ent-a", "password": "demo"})
    assert response.status_code == 429
    assert "登录失败次数过多" in response.get_data(as_text=True)
    assert "15" in response.get_data(as_text=True)
    clock.advance(minutes=16)
    assert client.post("/login", data={"username": "ent-a", "password": "demo"}).status_code == 302


def test_throttle_by_address_covers_guessing_many_user_names(app, site):
    client = app.test_client()
    for name in ("a", "b", "c", "d", "e"):
        client.post("/login", data={"username": name, "password": "bad"},
                    environ_base={"REMOTE_ADDR": "10.0.0.9"})
    response = client.post("/login", data={"username": "ent-b", "password": "demo"},
                           environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert response.status_code == 429
    other = app.test_client().post("/login", data={"username": "ent-b", "password": "demo"},
                                   environ_base={"REMOTE_ADDR": "10.0.0.10"})
    assert other.status_code == 302


def test_throttle_message_in_english(app, site):
    client = app.test_client()
    client.post("/language", data={"lang": "en"})
    for _ in range(5):
        client.post("/login", data={"username": "ent-a", "password": "bad"})
    response = client.post("/login", data={"username": "ent-a", "password": "demo"})
    assert response.status_code == 429
    assert "Too many failed logins" in response.get_data(as_text=True)


def test_disabled_user_cannot_log_in_and_loses_open_sessions(app, site):
    from engine.models import User
    client = login(app.test_client(), "ent-b")
    with site.engine.db.transaction() as session:
        session.query(User).filter_by(username="ent-b").one().active = False
    assert client.get("/").status_code == 302          # the session ended
    response = app.test_client().post("/login", data={"username": "ent-b", "password": "demo"})
    assert response.status_code == 403
    assert "已停用" in response.get_data(as_text=True)


def test_password_reset_ends_existing_sessions(app, site, as_user):
    client = as_user("ent-a")
    admin = as_user("admin")
    user_id = site.user("ent-a").id
    assert admin.post(f"/admin/users/{user_id}/password", data={"password": "new-password-1"}).status_code == 302
    assert client.get("/").status_code == 302
    assert login(app.test_client(), "ent-a", "new-password-1")


def test_language_is_remembered_for_the_user(app, site):
    client = login(app.test_client(), "ent-a")
    client.post("/language", data={"lang": "en", "next": "/"})
    assert site.user("ent-a").language == "en"
    fresh = login(app.test_client(), "ent-a")
    assert 'lang="en"' in fresh.get("/").get_data(as_text=True)


def test_logout_keeps_the_language(app, site):
    client = login(app.test_client(), "ent-a")
    client.post("/language", data={"lang": "en"})
    response = client.post("/logout", follow_redirects=True)
    assert "You have logged out" in response.get_data(as_text=True)
