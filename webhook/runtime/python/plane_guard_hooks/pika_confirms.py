"""pika: publisher confirms on every ``BlockingChannel`` that publishes, within the publish bound.

Plane's outbox poller publishes with pika without confirms: on a connection that died without
FIN/RST, ``basic_publish`` writes into the socket buffer, returns, and the event is gone while the
outbox marks it sent. With confirms, ``basic_publish`` returns only once the broker has the
message and raises otherwise, so the outbox keeps the event and sends it again.

Confirms alone could wait without limit, so each ``BlockingConnection`` also gets, unless the
application chose its own:

* ``blocked_connection_timeout``: a broker blocked by a resource alarm for longer than the bound
  closes the connection, and the waiting publish raises;
* ``TCP_USER_TIMEOUT``: a peer that stops acknowledging TCP data for longer than the bound (a
  black-holed connection) aborts the socket, and the waiting publish raises.

Each confirmed publish is accounted for: a line when it raised or was late (``accounting``).
"""

from plane_guard_hooks import PIKA_CONFIRM_VARIABLE, accounting, boolean, publish_timeout, read, replace, say

_announced = []


def _harden(parameters, bound):
    if getattr(parameters, "blocked_connection_timeout", 0) is None:
        parameters.blocked_connection_timeout = bound
    options = dict(getattr(parameters, "tcp_options", None) or {})
    if "TCP_USER_TIMEOUT" not in options:
        options["TCP_USER_TIMEOUT"] = int(bound * 1000)
        parameters.tcp_options = options


def patch(module):
    """``pika.adapters.blocking_connection``: connections get the bounds, channels get confirms."""
    confirm, ok = read(PIKA_CONFIRM_VARIABLE, boolean)
    bound = publish_timeout()
    connection = getattr(module, "BlockingConnection", None)
    channel = getattr(module, "BlockingChannel", None)
    if connection is None or channel is None:
        say("pika's BlockingConnection/BlockingChannel not found in this version; pika publishes are not guarded")
        return

    if bound is not None and not getattr(connection.__init__, "_plane_guard", False):
        init = connection.__init__

        def bounded_init(self, parameters=None, *args, **kwargs):
            try:
                import pika

                if parameters is None:
                    parameters = pika.ConnectionParameters()
                for item in parameters if isinstance(parameters, (list, tuple)) else [parameters]:
                    _harden(item, bound)
            except Exception as exc:  # the application's own parameters stay usable
                say(f"could not bound pika's connection ({type(exc).__name__}); it keeps its own settings")
            init(self, parameters, *args, **kwargs)

        replace(connection, "__init__", init, bounded_init)

    if ok and confirm and not getattr(channel.basic_publish, "_plane_guard", False):
        publish = channel.basic_publish

        def confirmed_publish(self, *args, **kwargs):
            state = getattr(self, "_delivery_confirmation", None)
            if state is False:
                self.confirm_delivery()
                if not _announced:
                    _announced.append(True)
                    limit = f"; a publish waits at most {bound} s for the broker" if bound else ""
                    say(f"pika: publisher confirms on{limit}")
            elif state is None and not _announced:
                _announced.append(True)
                say("pika: this version hides its confirm state; publisher confirms are not switched on")
            return _accounted(publish, self, args, kwargs, bound)

        replace(channel, "basic_publish", publish, confirmed_publish)


def _fields(args, kwargs):
    """Exchange, routing key and the message id from the properties: names only, never the body."""
    named = dict(zip(("exchange", "routing_key", "body", "properties"), args))
    named.update(kwargs)
    properties = named.get("properties")
    return {
        "task": None,
        "id": accounting.text(getattr(properties, "message_id", None)),
        "exchange": accounting.text(named.get("exchange")),
        "routing_key": accounting.text(named.get("routing_key")),
    }


def _accounted(publish, channel, args, kwargs, bound):
    token = accounting.start("pika", _fields(args, kwargs))
    try:
        result = publish(channel, *args, **kwargs)
    except Exception as exc:
        accounting.finish(token, "raised", bound=bound, error=type(exc).__name__)
        raise
    accounting.finish(token, None, bound=bound)
    return result
