"""Issue 7 acceptance in a real browser, on the demo (`cleanaudit init --demo`): the auditor opens ent-a's
mandatory audit and sees the diagram with the completed elements marked and the timeline; the process
owner renames a task in the modeler and deploys version 2 while running instances stay on version 1;
a user task taken out of its lane is refused with the error on the canvas and nothing deployed; every
file of the MIWG reference set renders in the viewer."""
from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
MIWG = sorted((ROOT / "tests" / "data" / "miwg").glob("*.bpmn"))
ENT_A = "乌鲁木齐天山化工有限公司"
TASK = "report_implementation"            # a user task of mandatory_audit in the enterprise lane


SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


def shot(page, name: str) -> Path:
    """A full-page screenshot under test-artifacts/screenshots/ (history-*.png, modeler-*.png)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture(scope="module")
def demo_database(tmp_path_factory):
    """`cleanaudit init --demo` built once (it takes seconds); each test serves a copy."""
    import fixture_site
    if hasattr(fixture_site, "demo_template"):          # shared with the other browser tests
        return fixture_site.demo_template()
    from engine.facade import Engine
    from engine.seed import init_database
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    engine = Engine(f"sqlite:///{path}")
    init_database(engine, demo=True)
    engine.db.dispose()                   # checkpoints the WAL into the file
    return path


@pytest.fixture
def demo_live(demo_database, tmp_path):
    """The web UI on a copy of the demo, on a free loopback port: (url, engine)."""
    from werkzeug.serving import make_server
    from engine.facade import Engine
    from webui import create_app
    path = tmp_path / "demo.sqlite"
    shutil.copyfile(demo_database, path)
    engine = Engine(f"sqlite:///{path}")
    app = create_app({"SECRET_KEY": "browser-tests", "ENGINE": engine, "SESSION_COOKIE_SECURE": False})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="webui-demo-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", engine
    finally:
        server.shutdown()
        thread.join(timeout=10)
        engine.db.dispose()


@pytest.fixture
def open_as(browser, demo_live):
    """open_as("auditor") -> a logged-in page in its own context; console errors are collected."""
    url, _engine = demo_live
    contexts = []

    def make(username: str, locale: str = "zh-CN"):
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale=locale)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(20000)
        page.problems = []
        page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.problems.append(str(e)))
        page.goto(url + "/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", "demo")
        page.click("button[type=submit].primary")
        page.wait_for_url(url + "/")
        return page
    yield make
    for context in contexts:
        context.close()


def no_script_errors(page) -> list[str]:
    """Console errors other than a missing favicon (CSP violations and exceptions count)."""
    return [p for p in page.problems if "favicon" not in p and "404" not in p]


def versions(engine, process_id="mandatory_audit"):
    from engine import inspect
    return [(v.version_no, v.running) for v in inspect.process_versions(engine, process_id)]


def open_modeler(page, url):
    page.goto(url + "/processes/mandatory_audit/edit")
    page.wait_for_selector("#modeler[data-imported=true]")


def test_auditor_sees_ent_a_instance_with_the_path_marked_and_the_timeline(open_as, demo_live):
    url, engine = demo_live
    page = open_as("auditor")
    page.click("nav.nav >> text=办理历史")
    page.fill("#f-enterprise", ENT_A)
    page.select_option("#f-process", "mandatory_audit")
    page.click("form.search-form button[type=submit]")
    rows = page.locator("table.instances-table tbody tr")
    assert rows.count() == 1
    shot(page, "history-01-search-zh")
    rows.first.locator("a.task-link").click()
    page.wait_for_url(re.compile(r".*/instances/\d+$"))
    page.wait_for_selector("#diagram[data-imported=true]")
    diagram = page.locator("#diagram")
    completed = diagram.locator("svg .djs-element.completed")
    assert completed.count() >= 3
    assert diagram.locator("svg .djs-element.active").count() >= 1
    assert diagram.locator("svg .djs-connection.taken").count() >= 1
    ids = completed.evaluate_all("els => els.map(e => e.getAttribute('data-element-id'))")
    assert {"start_listed", "compute_deadlines"} <= set(ids)
    # the marker shows: a completed task is drawn green, not bpmn-js's white
    fill = page.evaluate("""() => getComputedStyle(document.querySelector(
        '#diagram .djs-element.completed[data-element-id=compute_deadlines] .djs-visual > rect')).fill""")
    assert fill == "rgb(227, 242, 231)"
    assert page.locator(".bjs-powered-by").is_visible()            # the bpmn.io watermark
    timeline = page.locator("#timeline tbody tr")
    kinds = timeline.evaluate_all("rows => rows.map(r => r.dataset.kind)")
    assert kinds[:2] == ["started", "message_received"] and kinds[-1] == "confidential_viewed"
    assert "历史记录完整" in page.inner_text("#chain-status")
    assert no_script_errors(page) == []
    shot(page, "history-02-instance-zh")
    # into the disclosure sub-process: publish_emissions is the active task there
    page.click("[data-container-id=disclosure_phase] .bjs-drilldown")
    page.wait_for_selector("#diagram .djs-element.active[data-element-id=publish_emissions]")
    page.locator("#diagram").screenshot(path=str(SCREENSHOTS / "history-03-subprocess.png"))


def test_instance_page_in_english(open_as, demo_live):
    url, engine = demo_live
    page = open_as("epb-650102", locale="en")
    page.click("button[value=en]")
    page.goto(url + "/instances")
    page.locator("table.instances-table a.task-link").first.click()
    page.wait_for_selector("#diagram[data-imported=true]")
    assert "Timeline" in page.inner_text("#timeline-title")
    assert no_script_errors(page) == []
    shot(page, "history-04-instance-en")


def test_process_owner_renames_a_task_and_deploys_version_2(open_as, demo_live):
    url, engine = demo_live
    running_before = versions(engine)
    assert running_before == [(1, 3)]
    page = open_as("admin")
    open_modeler(page, url)
    assert page.locator(".bjs-powered-by").is_visible()
    # rename through the bpmn-js API, as a double click on the label would
    page.evaluate("""(id) => { const modeler = document.getElementById('modeler').bpmnModeler;
        const element = modeler.get('elementRegistry').get(id);
        modeler.get('modeling').updateLabel(element, '报告清洁生产方案实施进展（第二版）');
        modeler.get('selection').select(element); }""", TASK)
    # and change the article through our properties panel (a SpiffWorkflow extension property)
    assert page.input_value("#prop-id") == TASK
    assert page.input_value("#prop-name") == "报告清洁生产方案实施进展（第二版）"
    page.fill("#prop-article", "Art. 18, 11")
    page.press("#prop-article", "Tab")
    page.fill("#prop-instructions", "请报告方案实施进展。")
    page.press("#prop-instructions", "Tab")
    shot(page, "modeler-01-renamed")
    page.click("#save")
    page.wait_for_selector("#modeler[data-saved=ok]")
    assert "第 2 版" in page.inner_text("#save-status")
    assert page.inner_text("#current-version") == "当前第 2 版"
    assert no_script_errors(page) == []
    shot(page, "modeler-02-deployed")
    assert versions(engine) == [(2, 0), (1, 3)]               # running instances stay on version 1
    from engine import inspect
    number, xml = inspect.version_xml(engine, "mandatory_audit")
    assert number == 2 and 'name="报告清洁生产方案实施进展（第二版）"' in xml
    assert '<spiffworkflow:property name="article" value="Art. 18, 11" />' in xml
    assert "<spiffworkflow:instructionsForEndUser>请报告方案实施进展。</spiffworkflow:instructionsForEndUser>" in xml
    assert 'name="formJsonSchemaFilename"' in xml and "<spiffworkflow:messageVariable>listing" in xml
    page.click("#save-status a")
    page.wait_for_url(url + "/processes/mandatory_audit")
    rows = page.locator("#versions tbody tr")
    assert rows.nth(0).get_attribute("data-version") == "2"
    assert rows.nth(0).locator("td.running").inner_text() == "0"
    assert rows.nth(1).locator("td.running").inner_text() == "3"
    assert page.locator("tr.diff-added", has_text="第二版").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "modeler-03-versions-and-diff.png"))   # the diff is long


def test_the_properties_panel_writes_spiffworkflow_extensions(open_as, demo_live):
    url, engine = demo_live
    page = open_as("admin")
    open_modeler(page, url)

    def select(element_id):
        page.evaluate("""(id) => { const modeler = document.getElementById('modeler').bpmnModeler;
            modeler.get('selection').select(modeler.get('elementRegistry').get(id)); }""", element_id)

    def edit(field, value):
        page.fill(f"#prop-{field}", value)
        page.press(f"#prop-{field}", "Tab")

    select("disclosure_deadline")                           # a boundary timer
    assert page.input_value("#prop-timeDate") == "disclosure_due"
    assert not page.locator("#prop-formJsonSchemaFilename").is_visible()
    edit("timeDate", "verification_due")
    select("flow_disclosure_missed")                        # a flow out of an exclusive gateway
    assert page.input_value("#prop-condition") == "disclosure_missed"
    edit("condition", "disclosure_missed and not grounds")
    select("open_disclosure_penalty")                       # a message throw event
    assert page.input_value("#prop-message") == "penalty_case_opened"
    select("compute_deadlines")                             # a script task
    edit("script", page.input_value("#prop-script") + "\nchecked = True")
    select(TASK)
    page.select_option("#prop-formJsonSchemaFilename", "report_implementation.schema.json")
    edit("due", "report_due")
    edit("id", "report_progress")
    assert page.locator("#props-error").is_hidden()
    edit("id", "compute_deadlines")                         # taken: refused, the id stays
    assert page.locator("#props-error").is_visible() and page.input_value("#prop-id") == "report_progress"
    shot(page, "modeler-06-properties-panel")
    xml = page.evaluate("document.getElementById('modeler').bpmnModeler.saveXML({format: true}).then(r => r.xml)")
    assert '<bpmn:timeDate xsi:type="bpmn:tFormalExpression">verification_due</bpmn:timeDate>' in xml
    assert "<bpmn:conditionExpression xsi:type=\"bpmn:tFormalExpression\">disclosure_missed and not grounds" in xml
    assert "checked = True</bpmn:script>" in xml
    task = xml[xml.index('<bpmn:userTask id="report_progress"'):]
    task = task[:task.index("</bpmn:userTask>")]
    assert '<spiffworkflow:property name="formJsonSchemaFilename" value="report_implementation.schema.json" />' in task
    assert '<spiffworkflow:property name="due" value="report_due" />' in task
    assert "<bpmn:flowNodeRef>report_progress</bpmn:flowNodeRef>" in xml
    report = engine.validate_files([("mandatory_audit.bpmn", xml.encode("utf-8"))])
    assert report.ok, [str(p) for p in report.errors]
    assert no_script_errors(page) == []


def test_a_user_task_out_of_its_lane_shows_the_error_on_the_canvas_and_deploys_nothing(open_as, demo_live):
    url, engine = demo_live
    page = open_as("admin")
    open_modeler(page, url)
    page.evaluate("""(id) => { const modeler = document.getElementById('modeler').bpmnModeler;
        const lane = modeler.get('elementRegistry').get('lane_enterprise');
        modeler.get('modeling').updateModdleProperties(lane, lane.businessObject, {
            flowNodeRef: lane.businessObject.get('flowNodeRef').filter(node => node.id !== id) }); }""", TASK)
    page.click("#save")
    page.wait_for_selector("#modeler[data-saved=error]")
    marked = page.locator(f"#modeler .djs-element.error[data-element-id={TASK}]")
    assert marked.count() == 1
    stroke = marked.evaluate("el => getComputedStyle(el.querySelector('.djs-visual > rect')).stroke")
    assert stroke == "rgb(179, 38, 30)"
    problem = page.locator(f"#problem-list .problem-error[data-element={TASK}]")
    assert "in no lane" in problem.inner_text()
    assert "未部署" in page.inner_text("#save-status")
    problem.click()                                          # selects the element for the panel
    assert page.input_value("#prop-id") == TASK
    shot(page, "modeler-04-error-on-canvas")
    assert versions(engine) == [(1, 3)]


def test_a_faulty_upload_opens_in_the_modeler_with_the_error_marked(open_as, demo_live, tmp_path):
    url, engine = demo_live
    source = (ROOT / "processes" / "mandatory_audit.bpmn").read_text(encoding="utf-8")
    faulty = tmp_path / "mandatory_audit.bpmn"
    faulty.write_text(source.replace(f"<bpmn:flowNodeRef>{TASK}</bpmn:flowNodeRef>", ""), encoding="utf-8")
    page = open_as("admin")
    page.goto(url + "/processes/")
    page.set_input_files("#bpmn-file", str(faulty))
    page.click("form.upload-form button[type=submit]")
    page.wait_for_selector("#modeler[data-imported=true]")
    assert page.locator(f"#modeler .djs-element.error[data-element-id={TASK}]").count() == 1
    assert page.locator(f"#problem-list .problem-error[data-element={TASK}]").count() == 1
    shot(page, "modeler-05-upload-error")
    assert versions(engine) == [(1, 3)]


def test_every_miwg_reference_file_renders_in_the_viewer(open_as, demo_live):
    url, engine = demo_live
    assert len(MIWG) >= 20
    page = open_as("auditor")
    page.goto(url + "/instances/1")
    page.wait_for_selector("#diagram[data-imported=true]")
    results = {}
    for path in MIWG:
        results[path.name] = page.evaluate("""async (xml) => {
            const holder = document.createElement('div');
            holder.style.width = '1000px'; holder.style.height = '700px';
            document.body.appendChild(holder);
            const viewer = new BpmnJS({ container: holder });
            try {
                const result = await viewer.importXML(xml);
                return { ok: true, warnings: result.warnings.length,
                         shapes: viewer.get('elementRegistry').filter(e => !e.waypoints).length };
            } catch (error) {
                return { ok: false, error: error.message };
            } finally {
                viewer.destroy(); holder.remove();
            }
        }""", path.read_text(encoding="utf-8"))
    failed = {name: r for name, r in results.items() if not r["ok"] or r["shapes"] < 2}
    assert not failed, failed
    # one of them drawn on the page, for the screenshot
    page.evaluate("""async (xml) => { const holder = document.getElementById('diagram');
        await holder.bpmnViewer.importXML(xml); holder.bpmnViewer.get('canvas').zoom('fit-viewport'); }""",
                  (ROOT / "tests" / "data" / "miwg" / "B.2.0.bpmn").read_text(encoding="utf-8"))
    page.locator("#diagram").screenshot(path=str(SCREENSHOTS / "history-05-miwg-B.2.0.png"))
    assert no_script_errors(page) == []
