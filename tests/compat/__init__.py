"""``make compat``: the start-up hook against real library versions, real interpreters and a real RabbitMQ.

The hook patches library internals (kombu's ``Producer._publish`` by argument position, py-amqp's
frame wait and connect, gunicorn's config, pika's blocking channel), so a new release can break it
without any test in ``tests/runtime`` noticing: those run one pinned set of versions. Here each
combination of ``matrix.COMBOS`` gets a virtual environment of its own (cached under ``.compat/``)
and the same five checks against a RabbitMQ node started for the run (``node.py``).
"""
