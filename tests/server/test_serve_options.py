"""The ``serve`` options: one set of defaults, documented as they are, bad values refused at start."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.server.harness import ROOT
from webhook import cli
from webhook.serve.settings import ConnectionLimits, Settings

LIMIT_OPTIONS = ["max_connections", "max_header_bytes", "max_headers", "header_timeout", "body_timeout", "idle_timeout", "drain_seconds"]


def test_command_line_defaults_are_the_server_defaults():
    args = cli._parser().parse_args(["serve"])
    settings = cli._options(Settings, args)
    assert settings == Settings()
    assert settings.connection_limits() == ConnectionLimits()


def test_the_readme_states_the_defaults():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Serving under load and abuse"): readme.index("## Opt a namespace in")]
    defaults = Settings()
    for name in LIMIT_OPTIONS + ["max_body_bytes", "keep_alive_timeout", "graceful_timeout"]:
        option = "--" + name.replace("_", "-")
        found = re.search(re.escape(f"`{option}`") + r" \((\d+)( KiB| MiB| s)?", section)
        assert found, f"{option} and its default are not in the README"
        number, unit = int(found.group(1)), (found.group(2) or "").strip()
        value = number * {"KiB": 1024, "MiB": 1024 * 1024}.get(unit, 1)
        assert value == getattr(defaults, name), option


@pytest.mark.parametrize(
    "args, words",
    [
        (["--max-connections", "0"], "--max-connections"),
        (["--header-timeout", "0"], "--header-timeout"),
        (["--drain-seconds", "-1"], "--drain-seconds"),
        (["--max-header-bytes", "100"], "--max-header-bytes"),
        (["--client-ca-file", "/nonexistent/ca.crt"], "--client-ca-file"),
    ],
)
def test_bad_values_are_refused_at_start(cert_dir, args, words):
    result = subprocess.run(
        [sys.executable, "-m", "webhook.cli", "serve", "--host", "127.0.0.1", "--port", "1",
         "--cert-file", str(cert_dir / "tls.crt"), "--key-file", str(cert_dir / "tls.key"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert words in result.stderr
