"""kombu and py-amqp: a publish waits for the broker at most ``PLANE_GUARD_PUBLISH_TIMEOUT`` seconds.

Publisher confirms make a lost connection loud, but py-amqp waits for the confirmation without
any limit: a broker that is alive but blocked (a memory or disk alarm) would hold every
``delay()`` (and the web request around it) for as long as the alarm lasts. Here one deadline
covers the whole ``Producer.publish`` call, retries and reconnects included:

* each attempt's write and confirmation wait get the time left (``Producer._publish``);
* every frame wait and connection attempt inside the publish is cut at the deadline
  (``AbstractChannel.wait``, ``Connection.connect``), so declares and handshakes cannot hang;
* kombu's retry loop stops at the deadline instead of sleeping past it (its ``errback``).

Past the deadline the publish raises ``PublishTimeout``, which kombu reports as an
``OperationalError``: the caller sees an error, never a silent return. A publish the broker had
already read may still be delivered once the alarm clears. Outside a publish nothing changes.

Two exceptions to "raise at the bound": in a start-up step (``accounting.is_startup_step``: a
``manage.py`` command the entrypoint runs under ``set -e`` before the server) the publish goes
on without raising, as an unguarded one would, so a broker alarm cannot stop the container
from starting; and either way the publish leaves a line (``accounting``).
"""

import contextvars
import inspect
import socket
import time

from plane_guard_hooks import accounting, publish_timeout, replace, say, version_of

_deadline = contextvars.ContextVar("plane_guard_publish_deadline", default=None)


class PublishTimeout(socket.timeout):
    """The broker did not take the message within the bound (a TimeoutError, so kombu retries/reraises it)."""


def _expired(bound):
    return PublishTimeout(
        f"plane-guard: the broker did not confirm the publish within {bound} s "
        "(PLANE_GUARD_PUBLISH_TIMEOUT, the policy's publishTimeoutSeconds); it may be blocked by a resource alarm"
    )


def _remaining():
    deadline = _deadline.get()
    return None if deadline is None else deadline[0] - time.monotonic()


def _limit(timeout):
    """``timeout`` cut to the time left; raises once the deadline has passed."""
    deadline = _deadline.get()
    if deadline is None:
        return timeout, False
    remaining = deadline[0] - time.monotonic()
    if remaining <= 0:
        raise _expired(deadline[1])
    if timeout is None or timeout > remaining:
        return remaining, True
    return timeout, False


def _stop_retrying(errback, attempts):
    """kombu calls this before each reconnect sleep: give up when the sleep would end past the deadline."""

    def stop(exc, interval):
        remaining = _remaining()
        if remaining is not None and remaining <= (interval or 0):
            raise _expired(_deadline.get()[1]) from exc
        attempts[0] += 1
        if errback is not None:
            errback(exc, interval)

    return stop


def _parameters(function):
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


def _accepts(function, names):
    """Whether ``function`` takes each of ``names`` by keyword (the way the wrapper calls it)."""
    parameters = _parameters(function)
    return all(name in parameters for name in names)


def _reached_bound(exc, waited, bound):
    """Whether ``exc`` ended the publish at the bound (kombu wraps it in its own error)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, PublishTimeout):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return bound is not None and waited >= bound


def _fields(arguments):
    """Task name and id (Celery's message headers), exchange and routing key: names only, never the body."""
    headers = arguments.get("headers") or {}
    properties = arguments.get("properties") or {}
    headers = headers if isinstance(headers, dict) else {}
    return {
        "task": accounting.text(headers.get("task")),
        "id": accounting.text(headers.get("id") or properties.get("correlation_id")),
        "exchange": accounting.text(arguments.get("exchange")),
        "routing_key": accounting.text(arguments.get("routing_key")),
    }


def patch_producer(module):
    """``kombu.messaging``: the deadline starts with ``Producer.publish`` and bounds each attempt.

    Every publish is also accounted for (``accounting``): one line when it was late, retried,
    raised, or, in a start-up step, went on past the bound instead of raising.
    """
    bound = publish_timeout()
    producer = getattr(module, "Producer", None)
    publish = getattr(producer, "publish", None)
    if publish is None:
        say(f"kombu {version_of('kombu')}: no Producer.publish; Celery publishes are neither bounded nor accounted for")
        return
    if getattr(publish, "_plane_guard", False):
        return
    parameters = _parameters(publish)
    if not parameters:
        say(f"kombu {version_of('kombu')}: Producer.publish has no readable signature; publishes are not bounded")
        return
    signature = inspect.signature(publish)
    if bound is not None and "retry_policy" not in parameters:
        say(f"kombu {version_of('kombu')}: Producer.publish takes no retry_policy; a retried publish may wait past the bound")

    def bounded_publish(self, *args, **kwargs):
        if _deadline.get() is not None:  # a publish inside a publish (Celery's sent event) shares it
            return publish(self, *args, **kwargs)
        try:
            call = signature.bind(self, *args, **kwargs)
        except TypeError:  # kombu itself will say what is wrong with the call
            return publish(self, *args, **kwargs)
        arguments = call.arguments
        attempts = [1]
        if arguments.get("retry") and "retry_policy" in parameters:
            policy = dict(arguments.get("retry_policy") or {})
            policy["errback"] = _stop_retrying(policy.get("errback"), attempts)
            arguments["retry_policy"] = policy
        token = accounting.start("kombu", _fields(arguments))
        started = time.monotonic()
        deadline = _deadline.set((started + bound, bound)) if bound is not None else None
        try:
            result = publish(*call.args, **call.kwargs)
        except Exception as exc:
            past = _reached_bound(exc, time.monotonic() - started, bound)
            if past and accounting.is_startup_step():
                # A start-up step (manage.py ...) under ``set -e`` would stop the container: it
                # goes on, as an unguarded publish would, but says so.
                accounting.finish(token, "continued", attempts[0], bound, type(exc).__name__)
                fields = _fields(arguments)
                say(
                    f"start-up step: task {fields['task']} (id {fields['id']}) was not confirmed within {bound} s; "
                    "going on without it (it may be lost or arrive late; see the publish line)"
                )
                return None
            accounting.finish(token, "raised", attempts[0], bound, type(exc).__name__)
            raise
        finally:
            if deadline is not None:
                _deadline.reset(deadline)
        accounting.finish(token, None, attempts[0], bound)
        _check_confirm_mode(self)
        return result

    replace(producer, "publish", publish, bounded_publish)
    attempt = getattr(producer, "_publish", None)
    if bound is not None and attempt is None:
        say(f"kombu {version_of('kombu')}: no Producer._publish; a publish attempt has no timeout of its own")
    elif bound is not None:
        bounded_attempt = _bounded_attempt(attempt)
        if bounded_attempt is not None:
            replace(producer, "_publish", attempt, bounded_attempt)


_confirm_checked = []


def _check_confirm_mode(producer):
    """Once per process: when confirms were asked for, is the channel really in confirm mode?

    py-amqp marks a channel that sent ``confirm.select``; a kombu that no longer honours
    ``confirm_publish`` would otherwise leave every publish unconfirmed without a word.
    """
    if _confirm_checked:
        return
    _confirm_checked.append(True)
    try:
        from plane_guard_hooks import boolean, read

        wanted, ok = read("CELERY_CONFIRM_PUBLISH", boolean)
        channel = getattr(producer, "channel", None)
        selected = getattr(channel, "_confirm_selected", None)
        if ok and wanted and selected is False:
            say(
                f"kombu {version_of('kombu')} / py-amqp {version_of('amqp')}: CELERY_CONFIRM_PUBLISH is on but the "
                "channel is not in confirm mode: publishes are NOT confirmed, a dead connection loses them silently"
            )
    except Exception:
        pass


#: The arguments of ``Producer._publish`` that bound one attempt's write and confirmation wait
#: (``confirm_timeout`` since kombu 5.5).
ATTEMPT_TIMEOUTS = ("timeout", "confirm_timeout")


def _bounded_attempt(attempt):
    """``Producer._publish`` with its timeouts cut to the time left, found by name in its signature.

    A kombu whose ``_publish`` has none of them is said on stderr, with its version: the
    attempt then has no timeout of its own, and the frame waits (``patch_wait``) still end at the
    deadline.
    """
    try:
        signature = inspect.signature(attempt)
    except (TypeError, ValueError):
        signature = None
    names = [n for n in ATTEMPT_TIMEOUTS if signature is not None and n in signature.parameters]
    if not names:
        say(
            f"kombu {version_of('kombu')}: Producer._publish has no {' or '.join(ATTEMPT_TIMEOUTS)} argument; "
            "a publish attempt has no timeout of its own, only its frame waits end at the bound"
        )
        return None

    def bounded_attempt(self, *args, **kwargs):
        try:
            call = signature.bind(self, *args, **kwargs)
        except TypeError:
            return attempt(self, *args, **kwargs)
        for name in names:
            call.arguments[name], _ = _limit(call.arguments.get(name))
        return attempt(*call.args, **call.kwargs)

    return bounded_attempt


def patch_wait(module):
    """``amqp.abstract_channel``: every frame wait inside a publish ends at the deadline."""
    channel = getattr(module, "AbstractChannel", None)
    if publish_timeout() is None or channel is None or getattr(channel.wait, "_plane_guard", False):
        if publish_timeout() is not None and channel is None:
            say(f"py-amqp {version_of('amqp')}: no AbstractChannel; frame waits are not bounded, only kombu's attempt is")
        return
    wait = channel.wait
    if not _accepts(wait, ("method", "callback", "timeout", "returns_tuple")):
        say(
            f"py-amqp {version_of('amqp')}: AbstractChannel.wait takes other arguments; frame waits are not "
            "bounded, only kombu's attempt is"
        )
        return

    def bounded_wait(self, method, callback=None, timeout=None, returns_tuple=False):
        timeout, cut = _limit(timeout)
        try:
            return wait(self, method, callback=callback, timeout=timeout, returns_tuple=returns_tuple)
        except TimeoutError as exc:
            if cut and not isinstance(exc, PublishTimeout):
                raise _expired(_deadline.get()[1]) from exc
            raise

    replace(channel, "wait", wait, bounded_wait)


def patch_connect(module):
    """``amqp.connection``: a reconnect inside a publish (TCP connect and handshake) ends at the deadline."""
    connection = getattr(module, "Connection", None)
    if publish_timeout() is None or connection is None or getattr(connection.connect, "_plane_guard", False):
        return
    connect = connection.connect
    if "connect_timeout" not in _parameters(connection.__init__):
        say(f"py-amqp {version_of('amqp')}: Connection has no connect_timeout; a reconnect inside a publish is not bounded")
        return

    def bounded_connect(self, *args, **kwargs):
        if _deadline.get() is None:
            return connect(self, *args, **kwargs)
        saved = self.connect_timeout
        self.connect_timeout, _ = _limit(saved)
        try:
            return connect(self, *args, **kwargs)
        finally:
            self.connect_timeout = saved

    replace(connection, "connect", connect, bounded_connect)
