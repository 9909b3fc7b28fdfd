"""What the start-up hook does inside a Plane process, one module per library it adjusts.

``sitecustomize`` imports these modules only when the application itself imports the library
they patch, so a process that never touches Celery, gunicorn, kombu or pika pays nothing.
Everything here must keep the application running: a value that cannot be used costs one line
on stderr and is ignored. Standard library only, and never a secret value in a message.
"""

import os
import sys

NAME = "plane-guard"
TRUE = frozenset({"true", "1", "yes"})
FALSE = frozenset({"false", "0", "no"})

#: Seconds a guarded publish may wait for the broker (set by the webhook from the policy).
PUBLISH_TIMEOUT_VARIABLE = "PLANE_GUARD_PUBLISH_TIMEOUT"
#: Whether pika channels are switched to publisher confirms before their first publish.
PIKA_CONFIRM_VARIABLE = "PLANE_GUARD_PIKA_CONFIRM_DELIVERY"
#: JSON list of regular expressions: the processes (by command line) that are start-up steps.
STARTUP_STEPS_VARIABLE = "PLANE_GUARD_STARTUP_STEPS"


def say(message):
    try:
        sys.stderr.write(f"{NAME}: {message}\n")
        sys.stderr.flush()
    except Exception:
        pass


def env(name):
    """The variable's value, or None when it is unset or blank (an empty value means "not set")."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    return raw.strip()


def boolean(raw):
    lowered = raw.lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError("use true/false, 1/0 or yes/no")


def count(raw):
    try:
        value = int(raw, 10)
    except ValueError:
        raise ValueError("use a whole number >= 0") from None
    if value < 0:
        raise ValueError("use a whole number >= 0")
    return value


def seconds(raw):
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("use a number of seconds >= 0") from None
    if value != value or value in (float("inf"), float("-inf")) or value < 0:
        raise ValueError("use a number of seconds >= 0")
    return int(value) if value.is_integer() else value


def read(name, parse):
    """``(value, True)`` for a usable variable, ``(None, False)`` when unset or unusable."""
    raw = env(name)
    if raw is None:
        return None, False
    try:
        return parse(raw), True
    except ValueError as exc:
        # The value is not echoed: transport options may carry credentials.
        say(f"ignoring {name}: {exc}")
        return None, False


def version_of(name):
    """The version of an imported library, for messages about a shape the hook does not know."""
    module = sys.modules.get(name)
    return str(getattr(module, "__version__", None) or getattr(module, "VERSION", None) or "(version unknown)")


def publish_timeout():
    """The publish bound in seconds, or None when the policy sets none (or it is 0)."""
    value, ok = read(PUBLISH_TIMEOUT_VARIABLE, seconds)
    return value if ok and value > 0 else None


def run_after(owner, method_name, apply, what):
    """Wrap ``owner.method_name`` so ``apply(self, result)`` runs after the original.

    Idempotent, and ``apply`` failing only costs a line on stderr: the app's own settings stay.
    """
    original = getattr(owner, method_name, None)
    if original is None:
        say(f"{method_name} not found in this version; {what} are not applied")
        return
    if getattr(original, "_plane_guard", False):
        return

    def wrapper(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        try:
            apply(self, result)
        except Exception as exc:
            say(f"could not apply {what} ({type(exc).__name__}: {exc}); the app's own settings stay")
        return result

    replace(owner, method_name, original, wrapper)


def replace(owner, method_name, original, wrapper):
    """Install ``wrapper`` in place of ``original``, marked so it is never wrapped twice."""
    wrapper._plane_guard = True
    wrapper.__wrapped__ = original
    wrapper.__name__ = getattr(original, "__name__", method_name)
    wrapper.__doc__ = getattr(original, "__doc__", None)
    setattr(owner, method_name, wrapper)


def already_patched(owner, method_name):
    return getattr(getattr(owner, method_name, None), "_plane_guard", False)
