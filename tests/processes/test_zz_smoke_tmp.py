from tests.processes.conftest import TIANSHAN

def test_smoke(engine, deploy, actors, audit, scene, clock):
    deploy("mandatory_audit", "audit_stages")
    iid = audit.list_enterprise(actors.steel)
    a = actors
    scene.act(a.steel_user, "publish_emissions", audit.disclosure(), iid)
    scene.act(a.tianshan_epb, "verify_disclosure", {"verification": "accept", "checked_on": "2025-03-25"}, iid)
    print(scene.open_tasks(iid), scene.status(iid))
    audit.to_report(a.steel_user, iid)
    print(scene.open_tasks(iid), scene.status(iid))
    print(engine.task_view(a.steel_user, scene.task(a.steel_user, "submit_report").id).data)
    scene.act(a.steel_user, "submit_report", audit.report_summary(), iid)
    scene.act(a.tianshan_epb, "review_report", audit.accept_report(), iid)
    print(scene.open_tasks(iid), scene.status(iid))
    print(engine.instance_data(iid))
    print(scene.history_kinds(iid))
