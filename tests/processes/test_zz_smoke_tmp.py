from tests.processes.conftest import TIANSHAN

def test_smoke(engine, deploy, actors, audit, scene, clock):
    deploy("mandatory_audit", "audit_stages")
    iid = audit.list_enterprise(actors.steel)
    a = actors
    scene.act(a.steel_user, "commission_agency", audit.commission(a.agency), iid)
    scene.act(a.agency_user, "accept_commission", audit.accept_commission(), iid)
    print(scene.open_tasks(iid), scene.status(iid))
    from SpiffWorkflow import TaskState
    from SpiffWorkflow.bpmn import BpmnWorkflow
    print(BpmnWorkflow.do_engine_steps)
    with engine.db.read() as s:
        l = engine._load(s, iid, lock=False)
        print([ (t.task_spec.name, t.task_spec.manual) for t in l.workflow.get_tasks(state=TaskState.READY)])
        print([ (t.task_spec.name) for t in l.workflow.get_tasks(state=TaskState.READY, manual=False)])
        l.workflow.do_engine_steps()
        print([ (t.task_spec.name) for t in l.workflow.get_tasks(state=TaskState.READY)])
