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
"""

import contextvars
import socket
import time

from plane_guard_hooks import publish_timeout, replace

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


def _stop_retrying(errback):
    """kombu calls this before each reconnect sleep: give up when the sleep would end past the deadline."""

    def stop(exc, interval):
        remaining = _remaining()
        if remaining is not None and remaining <= (interval or 0):
            raise _expired(_deadline.get()[1]) from exc
        if errback is not None:
            errback(exc, interval)

    return stop


def patch_producer(module):
    """``kombu.messaging``: the deadline starts with ``Producer.publish`` and bounds each attempt."""
    bound = publish_timeout()
    producer = getattr(module, "Producer", None)
    if bound is None or producer is None or getattr(producer.publish, "_plane_guard", False):
        return
    publish, attempt = producer.publish, producer._publish

    def bounded_publish(self, *args, **kwargs):
        if _deadline.get() is not None:  # a publish inside a publish (Celery's sent event) shares it
            return publish(self, *args, **kwargs)
        if kwargs.get("retry"):
            policy = dict(kwargs.get("retry_policy") or {})
            policy["errback"] = _stop_retrying(policy.get("errback"))
            kwargs["retry_policy"] = policy
        token = _deadline.set((time.monotonic() + bound, bound))
        try:
            return publish(self, *args, **kwargs)
        finally:
            _deadline.reset(token)

    def bounded_attempt(self, *args, **kwargs):
        # kombu passes ``timeout`` last, positionally or by name; it bounds the write and the
        # confirmation wait of this attempt.
        if "timeout" in kwargs or len(args) < 12:
            kwargs["timeout"], _ = _limit(kwargs.get("timeout"))
        else:
            args = (*args[:11], _limit(args[11])[0], *args[12:])
        return attempt(self, *args, **kwargs)

    replace(producer, "publish", publish, bounded_publish)
    replace(producer, "_publish", attempt, bounded_attempt)


def patch_wait(module):
    """``amqp.abstract_channel``: every frame wait inside a publish ends at the deadline."""
    channel = getattr(module, "AbstractChannel", None)
    if publish_timeout() is None or channel is None or getattr(channel.wait, "_plane_guard", False):
        return
    wait = channel.wait

    def bounded_wait(self, method, callback=None, timeout=None, returns_tuple=False):
        timeout, cut = _limit(timeout)
        try:
            return wait(self, method, callback=callback, timeout=timeout, returns_tuple=returns_tuple)
        except socket.timeout as exc:
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
