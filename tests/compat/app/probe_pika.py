"""Publishes with a pika ``BlockingConnection`` on request, as Plane's outbox poller does (no confirms of its own).

Commands on stdin: ``publish MARKER`` (the marker is the message id), ``state`` (the channel's confirm
mode and the connection's blocked timeout, as pika holds them) and ``quit``.
"""

import json
import os
import sys
import time

import pika

QUEUE = "compat-events"


def main():
    parameters = pika.URLParameters(os.environ["AMQP_URL"])
    connection = pika.BlockingConnection(parameters)
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True)
    for line in sys.stdin:
        command, _, marker = line.strip().partition(" ")
        if command == "quit":
            break
        if command == "state":
            answer = {
                "confirm": getattr(channel, "_delivery_confirmation", None),
                "blocked_connection_timeout": parameters.blocked_connection_timeout,
                "tcp_options": parameters.tcp_options,
            }
            print(json.dumps(answer), flush=True)
            continue
        started = time.monotonic()
        try:
            properties = pika.BasicProperties(message_id=marker, delivery_mode=2)
            channel.basic_publish("", QUEUE, b'{"event": "compat"}', properties)
            answer = {"ok": True, "id": marker}
        except Exception as exc:  # noqa: BLE001 (whatever the library raises is the answer)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500], "module": type(exc).__module__}
        answer["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
