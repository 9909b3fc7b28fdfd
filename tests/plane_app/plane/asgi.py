"""A tiny ASGI app in place of Plane's Django/Channels one.

``GET /publish?marker=M`` calls ``export_task.delay(M)`` like a Plane view and answers with JSON
``{"pid", "task_id"}`` (or ``{"pid", "error"}`` with status 500 when ``delay()`` raised);
``GET /pid`` answers the worker PID without publishing.
"""

import json
import os
from urllib.parse import parse_qs

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plane.settings")
django.setup()

from plane.bgtasks import export_task  # noqa: E402


async def _reply(send, status, body):
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    pid = os.getpid()
    if scope["path"] == "/publish":
        marker = parse_qs(scope.get("query_string", b"").decode()).get("marker", [""])[0]
        try:
            result = export_task.delay(marker)
        except Exception as exc:
            await _reply(send, 500, {"pid": pid, "error": f"{type(exc).__name__}: {exc}"})
            return
        await _reply(send, 200, {"pid": pid, "task_id": result.id})
        return
    await _reply(send, 200, {"pid": pid})
