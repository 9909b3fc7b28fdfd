"""Shaped like Plane's outbox publisher: pika, a topic exchange, no publisher confirms of its own."""

import os

import pika

EXCHANGE = "plane.event_stream"


class EventPublisher:
    """One BlockingConnection, opened on first use and dropped after any failure."""

    def __init__(self, url=None):
        self.url = url or os.environ["AMQP_URL"]
        self.connection = None
        self.channel = None

    def _open(self):
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()
        self.channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)

    def publish(self, event_id, routing_key, body):
        if self.channel is None:
            self._open()
        properties = pika.BasicProperties(message_id=event_id, delivery_mode=2, content_type="application/json")
        self.channel.basic_publish(EXCHANGE, routing_key, body, properties=properties)

    def reset(self):
        try:
            if self.connection is not None and self.connection.is_open:
                self.connection.close()
        except Exception:
            pass
        self.connection = self.channel = None
