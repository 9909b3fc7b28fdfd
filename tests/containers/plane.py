"""Chart-shaped Plane pods (``plane-pods.yaml``), mutated by the webhook's core and played by podman.

Each pod gets a vhost of its own on the local RabbitMQ, so every connection and channel the
broker shows in it belongs to that pod. The checks look from inside the running containers
(``podman exec``) and from the broker (``rabbitmqctl``), never at the spec alone.
"""

from __future__ import annotations

import json
import socket
import string
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.containers.images import Images
from tests.pods import Pod, wait_for
from tests.proof.broker import RABBITMQCTL, VHost
from webhook.core.mutation import apply_patch, mutate_pod
from webhook.core.policy import Policy, default_policy

PODS_FILE = Path(__file__).resolve().parent / "plane-pods.yaml"
MARKERS = "/var/lib/plane-test/markers"

#: In-container HTTP client: GET each path from the API on $PORT (pausing argv[1] seconds in
#: between), print the JSON answers.
CLIENT = """
import json, os, sys, time, urllib.error, urllib.request
answers = []
for index, path in enumerate(sys.argv[2:]):
    time.sleep(float(sys.argv[1]) if index else 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{os.environ['PORT']}{path}", timeout=30) as response:
            answers.append(json.load(response))
    except urllib.error.HTTPError as error:
        answers.append(json.load(error))
print(json.dumps(answers))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fixtures(amqp_url: str, port: int) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(pods by short name such as ``ee-plane-api``, the ConfigMaps and Secret) for one run."""
    text = string.Template(PODS_FILE.read_text()).safe_substitute(amqp_url=amqp_url, port=str(port))
    documents = [d for d in yaml.safe_load_all(text) if d]
    pods = {d["metadata"]["name"].split("-wl-")[0]: d for d in documents if d["kind"] == "Pod"}
    return pods, [d for d in documents if d["kind"] != "Pod"]


def policy_with_runtime(image: str) -> Policy:
    """The default policy, with the init container's image replaced by a locally built one."""
    policy = default_policy()
    return policy.model_copy(update={"runtime": policy.runtime.model_copy(update={"image": image})})


def channels(vhost: VHost) -> list[dict[str, Any]]:
    """The broker's channels in ``vhost``: connection name and whether the channel is in confirm mode."""
    out = subprocess.run(
        [RABBITMQCTL, "-q", "--no-table-headers", "list_channels", "vhost", "connection", "confirm"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    return [{"connection": r[1], "confirm": r[2] == "true"} for r in rows if len(r) == 3 and r[0] == vhost.name]


@dataclass
class Played:
    """A running Plane pod: the pod, its app container and role, its vhost and API port."""

    case: str
    role: str
    pod: Pod
    container: str
    vhost: VHost
    port: int
    spec: dict[str, Any]
    guarded: bool

    def markers(self) -> list[str]:
        return self.pod.read_file(self.container, MARKERS).splitlines()

    def get(self, *paths: str, pause: float = 0.0) -> list[dict[str, Any]]:
        """GET each path from inside the API container, ``pause`` seconds apart; the JSON answers."""
        done = self.pod.exec(self.container, ["python3", "-c", CLIENT, str(pause), *paths], timeout=180)
        assert done.returncode == 0, f"in-container client failed: {done.stderr[-2000:]}"
        return json.loads(done.stdout)

    def logs(self) -> str:
        return self.pod.logs(self.container)


def role_of(case: str) -> str:
    return {"api": "api", "worker": "worker", "beat-worker": "beat"}[case.split("-plane-", 1)[1]]


def play(case: str, images: Images, guarded: bool = True) -> Played:
    """Start one chart-shaped pod (mutated unless ``guarded`` is False) and wait until it is serving.

    plane-ce pods get the full plane-guard image as the init container, plane-enterprise pods the
    runtime image: the init container's command is the same for both.
    """
    vhost = VHost("plane-guard-containers")
    pod = None
    try:
        port = free_port()
        pods, objects = fixtures(vhost.url(), port)
        spec = pods[case]
        if guarded:
            runtime_image = images.full if case.startswith("ce-") else images.runtime
            outcome = mutate_pod(spec, policy_with_runtime(runtime_image))
            assert outcome.patch, f"the webhook did not mutate {case}: {outcome.reasons}"
            spec = apply_patch(spec, outcome.patch)
        container = spec["spec"]["containers"][0]["name"]
        pod = Pod(spec, objects, images={c["image"]: images.app for c in spec["spec"]["containers"]}).start()
        played = Played(case, role_of(case), pod, container, vhost, port, spec, guarded)
        pod.wait_running(container, timeout=60)
        _wait_serving(played)
        return played
    except BaseException:
        if pod is not None:
            pod.remove()
        vhost.delete()
        raise


def _wait_serving(played: Played) -> None:
    def api_listens() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", played.port), timeout=1):
                return True
        except OSError:
            return False

    ready = {
        "api": api_listens,
        "worker": lambda: " ready." in played.logs(),
        "beat": lambda: "Sending due task" in played.logs(),
    }[played.role]
    try:
        wait_for(ready, timeout=90, interval=0.3, what=f"{played.case} serving")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{played.pod.describe()}") from None


def stop(played: Played) -> None:
    try:
        played.pod.remove()
    finally:
        played.vhost.delete()


#: The words of each role's application command line (gunicorn's master, celery's main process).
PROGRAM = {"api": ["gunicorn"], "worker": ["celery", "worker"], "beat": ["celery", "beat"]}


def program_process(played: Played) -> tuple[int, list[str]]:
    """The host PID and command line of the pod's application process, wherever it runs in the
    container (under the supervisor, under a shell that did not exec it)."""
    for host_pid in sorted(played.pod.host_pids(played.container).values()):
        try:
            argv = [part for part in Path(f"/proc/{host_pid}/cmdline").read_text().split("\0") if part]
        except OSError:
            continue
        words = [part.rsplit("/", 1)[-1] for part in argv]
        if set(PROGRAM[played.role]) <= set(words) and "-c" not in words[:2]:
            return host_pid, argv
    raise AssertionError(f"no {PROGRAM[played.role]} process in {played.case}")
