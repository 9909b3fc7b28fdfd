"""The URL merge table: every row of amqp-experiment.md section 1, read back by real kombu."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

import pytest
from kombu import Connection

from webhook.core.amqp_url import main, merge_heartbeat, redact

BROKER = "amqp://guest:guest@127.0.0.1:5672"

# (input URL, heartbeat, existing, expected URL, heartbeat kombu must see, vhost kombu must see)
TABLE = [
    # no query: kombu defaults to 0, which switches RabbitMQ's 60 s off
    (f"{BROKER}//", 60, "keep", f"{BROKER}//?heartbeat=60", 60.0, "/"),
    (f"{BROKER}/", 60, "keep", f"{BROKER}/?heartbeat=60", 60.0, "/"),
    (BROKER, 60, "keep", f"{BROKER}?heartbeat=60", 60.0, "/"),
    # an existing valid heartbeat is kept, or replaced when the policy says so
    (f"{BROKER}//?heartbeat=30", 60, "keep", f"{BROKER}//?heartbeat=30", 30.0, "/"),
    (f"{BROKER}//?heartbeat=30", 60, "replace", f"{BROKER}//?heartbeat=60", 60.0, "/"),
    (f"{BROKER}//?heartbeat=7.5", 60, "keep", f"{BROKER}//?heartbeat=7.5", 7.5, "/"),
    (f"{BROKER}//?heartbeat=90", 60, "keep", f"{BROKER}//?heartbeat=90", 90.0, "/"),
    (f"{BROKER}//?heartbeat=0", 60, "keep", f"{BROKER}//?heartbeat=0", 0, "/"),
    # kombu raises ValueError on heartbeat=abc: always replaced
    (f"{BROKER}//?heartbeat=abc", 60, "keep", f"{BROKER}//?heartbeat=60", 60.0, "/"),
    # duplicate keys: kombu takes the last; the merge leaves one
    (f"{BROKER}//?heartbeat=10&heartbeat=20", 60, "keep", f"{BROKER}//?heartbeat=20", 20.0, "/"),
    # an existing query gets '&', never a second '?'
    (f"{BROKER}//?login_method=AMQPLAIN", 60, "keep", f"{BROKER}//?login_method=AMQPLAIN&heartbeat=60", 60.0, "/"),
    (f"{BROKER}//?", 60, "keep", f"{BROKER}//?heartbeat=60", 60.0, "/"),
    (f"{BROKER}//?login_method=AMQPLAIN&", 60, "keep", f"{BROKER}//?login_method=AMQPLAIN&heartbeat=60", 60.0, "/"),
    (f"{BROKER}//?connect_timeout=10&heartbeat=30", 60, "keep", f"{BROKER}//?connect_timeout=10&heartbeat=30", 30.0, "/"),
    (f"{BROKER}?heartbeat=30", 60, "keep", f"{BROKER}?heartbeat=30", 30.0, "/"),
    # vhosts survive exactly as written
    (f"{BROKER}/plane", 60, "keep", f"{BROKER}/plane?heartbeat=60", 60.0, "plane"),
    (f"{BROKER}/%2Fplane", 60, "keep", f"{BROKER}/%2Fplane?heartbeat=60", 60.0, "/plane"),
    (f"{BROKER}//plane", 60, "keep", f"{BROKER}//plane?heartbeat=60", 60.0, "/plane"),
    # TLS and the py-amqp scheme alias
    ("amqps://guest:guest@127.0.0.1:5671//?heartbeat=30", 60, "keep", "amqps://guest:guest@127.0.0.1:5671//?heartbeat=30", 30.0, "/"),
    ("amqps://guest:guest@127.0.0.1:5671//", 60, "keep", "amqps://guest:guest@127.0.0.1:5671//?heartbeat=60", 60.0, "/"),
    ("pyamqp://guest:guest@127.0.0.1//", 30, "keep", "pyamqp://guest:guest@127.0.0.1//?heartbeat=30", 30.0, "/"),
    # percent-encoded userinfo is not re-encoded
    ("amqp://pl%40ne:p%2Fw%3Ad@rabbit:5672/plane", 60, "keep", "amqp://pl%40ne:p%2Fw%3Ad@rabbit:5672/plane?heartbeat=60", 60.0, "plane"),
    # fractional policy values keep their precision
    (f"{BROKER}//", 7.5, "keep", f"{BROKER}//?heartbeat=7.5", 7.5, "/"),
]


@pytest.mark.parametrize(("url", "heartbeat", "existing", "expected", "kombu_heartbeat", "vhost"), TABLE)
def test_merge_table_read_back_by_kombu(url, heartbeat, existing, expected, kombu_heartbeat, vhost):
    merged = merge_heartbeat(url, heartbeat, existing)
    assert merged.url == expected
    assert merged.changed == (expected != url)
    connection = Connection(merged.url)
    assert connection.heartbeat == kombu_heartbeat
    assert connection.virtual_host == vhost


def test_percent_encoded_password_reaches_kombu_unchanged():
    connection = Connection(merge_heartbeat("amqp://pl%40ne:p%2Fw%3Ad@rabbit:5672/plane", 60).url)
    assert (connection.userid, connection.password, connection.hostname, connection.port) == ("pl@ne", "p/w:d", "rabbit", 5672)


def test_amqps_stays_tls():
    connection = Connection(merge_heartbeat("amqps://g:g@rabbit:5671//", 60).url)
    assert (connection.transport_cls, connection.transport.__class__.__name__) == ("amqps", "SSLTransport")


def test_url_heartbeat_beats_the_keyword_argument():
    """kombu lets the URL win over Connection(heartbeat=...), so the merge decides."""
    assert Connection(merge_heartbeat(f"{BROKER}//", 30).url, heartbeat=10).heartbeat == 30.0


@pytest.mark.parametrize("key", ["foo", "confirm_publish"])
def test_unknown_keys_are_reported_and_never_added(key):
    merged = merge_heartbeat(f"{BROKER}//?{key}=bar", 60)
    assert merged.url == f"{BROKER}//?{key}=bar&heartbeat=60"
    assert any(key in w and "TypeError" in w for w in merged.warnings)
    with pytest.raises(TypeError):
        Connection(merged.url)


def test_ssl_keys_are_known_to_kombu():
    merged = merge_heartbeat("amqps://g:g@rabbit:5671//?ssl_cert_reqs=CERT_NONE", 60)
    assert merged.warnings == ()
    assert merged.url.endswith("?ssl_cert_reqs=CERT_NONE&heartbeat=60")


def test_failover_lists_get_a_heartbeat_on_every_url():
    merged = merge_heartbeat("amqp://g:g@a//;amqp://g:g@b//?heartbeat=5", 60)
    assert merged.url == "amqp://g:g@a//?heartbeat=60;amqp://g:g@b//?heartbeat=5"
    assert Connection(merged.url).heartbeat == 60.0


def test_fragment_stays_after_the_query():
    assert merge_heartbeat(f"{BROKER}//#x", 60).url == f"{BROKER}//?heartbeat=60#x"


@pytest.mark.parametrize("url", ["redis://h:6379/0", "sqs://", "not a url", "", "$(AMQP)"])
def test_non_amqp_urls_are_left_alone(url):
    merged = merge_heartbeat(url, 60)
    assert merged.url == url and not merged.changed and merged.reason == "not-amqp"


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf")])
def test_bad_heartbeat_setting_is_refused(bad):
    with pytest.raises(ValueError):
        merge_heartbeat(f"{BROKER}//", bad)


def test_redact_hides_only_the_password():
    assert redact("amqp://plane:Zq9secret@rabbit:5672/plane?heartbeat=1") == "amqp://plane:***@rabbit:5672/plane?heartbeat=1"
    assert "Zq9" not in redact("amqp://plane:Zq9@rabbit")


def _run_main(env):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(env)
    return code, out.getvalue(), err.getvalue()


def test_runtime_entry_prints_only_the_url_on_stdout_and_never_the_password_elsewhere():
    env = {"AMQP_URL": "amqp://plane:Zq9secretpw@rabbit:5672/plane?foo=1", "PLANE_GUARD_AMQP_HEARTBEAT": "60"}
    code, out, err = _run_main(env)
    assert code == 0
    assert out == "amqp://plane:Zq9secretpw@rabbit:5672/plane?foo=1&heartbeat=60"
    assert "Zq9secretpw" not in err and "foo" in err


@pytest.mark.parametrize(
    "env",
    [
        {"PLANE_GUARD_AMQP_HEARTBEAT": "60"},
        {"AMQP_URL": "amqp://g:g@h//", "PLANE_GUARD_AMQP_HEARTBEAT": "abc"},
        {"AMQP_URL": "amqp://g:g@h//", "PLANE_GUARD_AMQP_HEARTBEAT": "60", "PLANE_GUARD_AMQP_HEARTBEAT_EXISTING": "x"},
    ],
)
def test_runtime_entry_keeps_the_original_on_bad_settings(env):
    code, out, err = _run_main(env)
    assert code == 1 and out == "" and err.startswith("plane-guard:")


def test_runtime_entry_honours_another_variable_name():
    env = {"BROKER": "amqp://g:g@h//", "PLANE_GUARD_AMQP_URL_VAR": "BROKER", "PLANE_GUARD_AMQP_HEARTBEAT": "15"}
    assert _run_main(env)[:2] == (0, "amqp://g:g@h//?heartbeat=15")


def test_unknown_key_beside_a_heartbeat_is_reported_and_the_heartbeat_kept():
    merged = merge_heartbeat(f"{BROKER}//?foo=bar&heartbeat=30", 60)
    assert merged.url == f"{BROKER}//?foo=bar&heartbeat=30" and not merged.changed
    assert any("'foo'" in w for w in merged.warnings)


def test_a_naive_second_question_mark_is_what_the_merge_avoids():
    """The experiment's failure: '?' appended to a URL that has a query makes kombu raise."""
    with pytest.raises(ValueError):
        Connection(f"{BROKER}//?heartbeat=10?heartbeat=30")
    merged = merge_heartbeat(f"{BROKER}//?heartbeat=10", 30, "replace").url
    assert merged.count("?") == 1 and Connection(merged).heartbeat == 30.0
