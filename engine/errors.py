"""The engine's small error hierarchy; each error carries its context."""
from __future__ import annotations


class CleanauditError(Exception):
    """Base of every error the engine raises on purpose."""


class InvalidProcess(CleanauditError):
    """A BPMN file that cannot be deployed; carries the problems found."""

    def __init__(self, problems):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems) or "invalid process")


class ProcessNotFound(CleanauditError):
    def __init__(self, process_id: str):
        self.process_id = process_id
        super().__init__(f"no deployed process '{process_id}'")


class InstanceNotFound(CleanauditError):
    def __init__(self, instance_id):
        self.instance_id = instance_id
        super().__init__(f"no instance {instance_id}")


class TaskNotFound(CleanauditError):
    def __init__(self, task_id):
        self.task_id = task_id
        super().__init__(f"no task {task_id}")


class NotAllowed(CleanauditError):
    def __init__(self, user, what, reason: str = ""):
        self.user = user
        self.what = what
        self.reason = reason
        name = getattr(user, "username", user)
        super().__init__(f"{name} may not act on {what}" + (f": {reason}" if reason else ""))


class InvalidFormData(CleanauditError):
    """Submitted data does not satisfy the task's form; `errors` maps a field path to messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        parts = [f"{field or '(form)'}: {'; '.join(msgs)}" for field, msgs in errors.items()]
        super().__init__("invalid form data: " + " | ".join(parts))


class StaleInstance(CleanauditError):
    """The instance or task changed meanwhile (another user completed it first)."""

    def __init__(self, instance_id, detail: str = "changed meanwhile"):
        self.instance_id = instance_id
        self.detail = detail
        super().__init__(f"instance {instance_id} {detail}")


class ScriptError(CleanauditError):
    """A script, condition or expression failed or exceeded its budget at run time."""


class ScriptRefused(CleanauditError):
    """A script uses a construct the restricted engine does not allow (found statically)."""
