"""gunicorn through the wrapper: GUNICORN_MAX_REQUESTS* win over every way the image can set them."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.pods import wait_for
from tests.proof.plane import free_port
from tests.proof.scenarios import pid_runs
from tests.runtime.conftest import APP_DIR, base_env

TINY_APP = "async def application(scope, receive, send):\n    pass\n"

#: Every way Plane's entrypoint (or an operator) can give gunicorn the rotation settings.
SPELLINGS = {
    "separate-values": (["--max-requests", "5", "--max-requests-jitter", "7"], {}),
    "equals": (["--max-requests=5", "--max-requests-jitter=7"], {}),
    "mixed": (["--max-requests=5", "--max-requests-jitter", "7"], {}),
    "GUNICORN_CMD_ARGS": ([], {"GUNICORN_CMD_ARGS": "--max-requests 5 --max-requests-jitter=7"}),
    "config-file": (["-c", "gunicorn.conf.py"], {}),
    "default-config-file": ([], {}),
}


def _print_config(runtime_dir: Path, workdir: Path, args: list[str], env: dict[str, str]) -> tuple[dict[str, int], str]:
    """``gunicorn --print-config`` through the wrapper: the configuration gunicorn would run with."""
    done = subprocess.run(
        ["/bin/sh", str(runtime_dir / "entrypoint.sh"), "gunicorn", "--print-config", *args, "app:application"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    values = {k: int(v) for k, v in re.findall(r"^(max_requests(?:_jitter)?)\s*=\s*(\d+)\s*$", done.stdout, re.M)}
    return values, done.stderr


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "app.py").write_text(TINY_APP)
    (tmp_path / "gunicorn.conf.py").write_text("max_requests = 5\nmax_requests_jitter = 7\n")
    return tmp_path


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_is_overridden(runtime_dir, workdir, spelling):
    args, extra = SPELLINGS[spelling]
    if spelling != "default-config-file" and spelling != "config-file":
        (workdir / "gunicorn.conf.py").unlink()
    as_written, _ = _print_config(runtime_dir, workdir, args, base_env(**extra))
    assert as_written == {"max_requests": 5, "max_requests_jitter": 7}, "the control run must see the image's values"
    guarded, stderr = _print_config(
        runtime_dir, workdir, args, base_env(GUNICORN_MAX_REQUESTS="0", GUNICORN_MAX_REQUESTS_JITTER="0", **extra)
    )
    assert guarded == {"max_requests": 0, "max_requests_jitter": 0}
    assert "plane-guard: gunicorn max_requests=0 (was 5, from GUNICORN_MAX_REQUESTS), max_requests_jitter=0 (was 7" in stderr


def test_only_the_variables_that_are_set_change_anything(runtime_dir, workdir):
    values, _ = _print_config(runtime_dir, workdir, ["--max-requests", "1200"], base_env(GUNICORN_MAX_REQUESTS_JITTER="50"))
    assert values == {"max_requests": 1200, "max_requests_jitter": 50}


@pytest.mark.parametrize("raw", ["abc", "-1", "1.5", "0x10"])
def test_a_bad_value_is_reported_and_gunicorn_keeps_its_setting(runtime_dir, workdir, raw):
    values, stderr = _print_config(runtime_dir, workdir, ["--max-requests", "1200"], base_env(GUNICORN_MAX_REQUESTS=raw))
    assert values["max_requests"] == 1200
    message = f"plane-guard: ignoring GUNICORN_MAX_REQUESTS={raw!r}: use a whole number >= 0; gunicorn keeps max_requests=1200"
    assert message in stderr


def _get_pid(port: int) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        connection.request("GET", "/pid", headers={"Connection": "close"})
        return json.loads(connection.getresponse().read())["pid"]
    finally:
        connection.close()


class _Api:
    """The Plane-shaped API entrypoint (hard-coded --max-requests 5) started through the wrapper."""

    def __init__(self, runtime_dir: Path, tmp_path: Path, **env: str):
        self.port = free_port()
        self.markers = tmp_path / "markers.txt"
        self.stderr = tmp_path / "stderr.txt"
        full = base_env(PORT=str(self.port), PLANE_FAKE_MARKERS=str(self.markers), HOME=str(tmp_path), **env)
        with open(self.stderr, "wb") as err:
            self.process = subprocess.Popen(
                ["/bin/sh", str(runtime_dir / "entrypoint.sh"), "./bin/docker-entrypoint-api.sh"],
                env=full,
                cwd=APP_DIR,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        wait_for(self._listening, timeout=45, what="gunicorn listening")

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"gunicorn exited {self.process.returncode}:\n{self.stderr.read_text()[-3000:]}")
        try:
            with __import__("socket").create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def pids(self, count: int) -> list[int]:
        found = []
        for _ in range(count):
            found.append(_get_pid(self.port))
            time.sleep(0.3)
        return found

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            __import__("os").killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.process.wait(timeout=10)


def test_bad_value_on_a_real_server_keeps_the_images_rotation_and_serves(runtime_dir, tmp_path):
    api = _Api(runtime_dir, tmp_path, GUNICORN_MAX_REQUESTS="abc")
    try:
        runs = pid_runs(api.pids(7))
    finally:
        code = api.stop()
    assert len(runs) == 2 and runs[0] >= 5, f"expected rotation after 5 requests (the image's own limit), got {runs}"
    assert "Maximum request limit of 5 exceeded" in api.stderr.read_text()
    assert code == 0, "SIGTERM to the container's PID must stop gunicorn cleanly"
    assert "plane-guard: ignoring GUNICORN_MAX_REQUESTS='abc'" in api.stderr.read_text()
    steps = [line.split()[0] for line in api.markers.read_text().splitlines()]
    assert steps[:1] == ["entrypoint-start"] and {"wait_for_db", "register_instance", "exec"} <= set(steps)


def test_override_survives_a_configuration_reload(runtime_dir, tmp_path):
    """SIGHUP makes gunicorn re-read its configuration; rotation must stay off afterwards."""
    api = _Api(runtime_dir, tmp_path, GUNICORN_MAX_REQUESTS="0", GUNICORN_MAX_REQUESTS_JITTER="0")
    try:
        before = api.pids(2)
        api.process.send_signal(signal.SIGHUP)
        wait_for(lambda: _get_pid(api.port) != before[0], timeout=30, interval=0.3, what="a new worker after SIGHUP")
        after = api.pids(7)
    finally:
        api.stop()
    assert pid_runs(before) == [2]
    assert pid_runs(after) == [7]
    assert api.stderr.read_text().count("plane-guard: gunicorn max_requests=0") == 2


def _mutated_api_env(policy) -> dict[str, str]:
    """The literal env entries plane-guard gives a plane-enterprise api container (envFrom only)."""
    from tests.fixtures import golden
    from webhook.core.mutation import apply_patch, mutate_pod

    pod = golden.load_input("api-envfrom-secret")
    mutated = apply_patch(pod, mutate_pod(pod, policy).patch)
    return {e["name"]: e["value"] for e in mutated["spec"]["containers"][0]["env"] if "value" in e}


#: What plane-enterprise 3.5.1's ``plane-app-vars`` ConfigMap brings through envFrom.
CHART_VARS = {"GUNICORN_MAX_REQUESTS": "1000", "GUNICORN_MAX_REQUESTS_JITTER": "150", "CELERY_TASK_PUBLISH_RETRY": "1"}


def test_the_default_policy_turns_the_charts_rotation_off_and_says_so(runtime_dir, workdir):
    from webhook.core.policy import default_policy

    env = base_env(**CHART_VARS, **_mutated_api_env(default_policy()))
    values, stderr = _print_config(runtime_dir, workdir, ["--max-requests", "1200", "--max-requests-jitter", "1000"], env)
    assert values == {"max_requests": 0, "max_requests_jitter": 0}
    assert "plane-guard: GUNICORN_MAX_REQUESTS: replaced the container's 1000 with 0 (policy, existingEnv: replace)" in stderr
    assert "plane-guard: GUNICORN_MAX_REQUESTS_JITTER: replaced the container's 150 with 0 (policy, existingEnv: replace)" in stderr


def test_under_keep_the_operators_value_from_env_from_is_what_gunicorn_runs(runtime_dir, workdir):
    from webhook.core.policy import default_policy_text, load_policy_text

    keep = load_policy_text(default_policy_text().replace("existing: replace", "existing: keep"))
    env = base_env(GUNICORN_MAX_REQUESTS="5000", **_mutated_api_env(keep))
    values, stderr = _print_config(runtime_dir, workdir, ["--max-requests", "1200", "--max-requests-jitter", "1000"], env)
    assert values == {"max_requests": 5000, "max_requests_jitter": 0}
    assert "plane-guard: GUNICORN_MAX_REQUESTS: kept the container's 5000 (policy default 0, existingEnv: keep)" in stderr
