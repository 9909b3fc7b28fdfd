"""Names plane-guard shares with the cluster: labels, annotations, paths and runtime variables.

The manifests, the webhook configurations and the code must agree on these; tests check that
they do, so change them here and nowhere else.
"""

from __future__ import annotations

PREFIX = "plane-guard.io"

#: Namespace label that opts a namespace in: ``enabled`` (enforce) or ``audit`` (report only).
#: On a pod, as a label (read by the webhook objectSelector) or an annotation, ``"false"`` or
#: ``"disabled"`` opts that pod out.
INJECT = f"{PREFIX}/inject"
NAMESPACE_MODES = ("enabled", "audit")
OPT_OUT_VALUES = frozenset({"false", "disabled", "off", "no"})

#: Written on every pod plane-guard changed: version, policy hash, names of what changed.
STATUS_ANNOTATION = f"{PREFIX}/status"

#: Per-pod override annotations (validated; a bad value is a warning, never a failure).
MAX_REQUESTS_ANNOTATION = f"{PREFIX}/gunicorn-max-requests"
MAX_REQUESTS_JITTER_ANNOTATION = f"{PREFIX}/gunicorn-max-requests-jitter"
HEARTBEAT_ANNOTATION = f"{PREFIX}/amqp-heartbeat"
WRAP_ANNOTATION = f"{PREFIX}/wrap-entrypoint"

#: The runtime delivered into Plane containers: an init container copies the files into an
#: emptyDir volume mounted at ``Policy.runtime.mountPath`` (``/plane-guard`` by default).
RUNTIME_VOLUME = "plane-guard-runtime"
RUNTIME_INIT_CONTAINER = "plane-guard-runtime"
RUNTIME_ENTRYPOINT = "entrypoint.sh"
RUNTIME_PYTHON_DIR = "python"
RUNTIME_SHELL = "/bin/sh"
#: Where the ServiceAccount admission plugin mounts the pod's API token into every container
#: that has nothing mounted there yet.
SERVICE_ACCOUNT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"

#: Variables the webhook sets for the runtime wrapper (never secret values).
ENV_AMQP_HEARTBEAT = "PLANE_GUARD_AMQP_HEARTBEAT"
ENV_AMQP_HEARTBEAT_EXISTING = "PLANE_GUARD_AMQP_HEARTBEAT_EXISTING"
ENV_AMQP_URL_VAR = "PLANE_GUARD_AMQP_URL_VAR"
RESERVED_ENV_PREFIX = "PLANE_GUARD_"
#: Policy settings the wrapper decides at container start, when envFrom values are visible:
#: ``<DEFAULT_PREFIX><NAME>`` applies only where the container has no value of its own
#: (``existingEnv: keep``), ``<OVERRIDE_PREFIX><NAME>`` always wins (``replace``).
ENV_DEFAULT_PREFIX = "PLANE_GUARD_DEFAULT_"
ENV_OVERRIDE_PREFIX = "PLANE_GUARD_OVERRIDE_"
#: Seconds a guarded publish may wait for the broker; whether pika channels use confirms.
ENV_PUBLISH_TIMEOUT = "PLANE_GUARD_PUBLISH_TIMEOUT"
ENV_PIKA_CONFIRM = "PLANE_GUARD_PIKA_CONFIRM_DELIVERY"
#: The policy's ``startupSteps`` (JSON list of regular expressions on a process's command line).
ENV_STARTUP_STEPS = "PLANE_GUARD_STARTUP_STEPS"
#: Who writes a publish line: the pod's workload (literal) and the pod's name (Downward API).
ENV_WORKLOAD = "PLANE_GUARD_WORKLOAD"
ENV_POD = "PLANE_GUARD_POD"

#: HTTP paths served by the webhook.
PATH_MUTATE = "/mutate"
PATH_MUTATE_AUDIT = "/mutate/audit"
PATH_VALIDATE = "/validate"
PATH_VALIDATE_AUDIT = "/validate/audit"
PATH_HEALTHZ = "/healthz"
PATH_READYZ = "/readyz"
PATH_METRICS = "/metrics"

#: In-cluster defaults (manifests/base uses these).
SERVICE_NAME = "plane-guard"
SERVICE_NAMESPACE = "plane-guard"
SERVICE_PORT = 443
CONTAINER_PORT = 8443
MUTATING_WEBHOOK_CONFIGURATION = "plane-guard"
VALIDATING_WEBHOOK_CONFIGURATION = "plane-guard"
TLS_SECRET = "plane-guard-tls"
