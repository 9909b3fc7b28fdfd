"""Every logged field that comes from a request is cut to a bounded length."""

from __future__ import annotations

import json

from tests.server.abuse import many_containers_review
from tests.server.pods import plane_pod, review
from webhook.core import conventions
from webhook.serve.decision_log import FIELD_MAX_CHARS, FIELD_MAX_ITEMS

#: One decision line, whatever the request held (fields, item counts and summaries included).
LINE_MAX = 16 * 1024


def _longest_line(server) -> int:
    return max(len(line) for line in server.log().splitlines())


def test_a_two_million_character_namespace(enforce_server, client):
    request = review(plane_pod(), namespace="n" * 2_000_000)
    request["request"]["object"]["metadata"]["generateName"] = "g" * 1_000_000
    assert client.review(conventions.PATH_MUTATE, request)["response"]["allowed"] is True
    decision = enforce_server.decision(request["request"]["uid"])
    assert len(decision["namespace"]) == FIELD_MAX_CHARS and decision["namespace"].endswith("...")
    assert len(decision["pod"]) == FIELD_MAX_CHARS
    assert _longest_line(enforce_server) < LINE_MAX


def test_many_named_containers(enforce_server, client):
    """Names of 34 long-named Plane containers (more than a logged list keeps, within the default
    limits: 40 such containers need a patch above patchBytes): lists are cut, not the answer."""
    body = many_containers_review(FIELD_MAX_ITEMS + 2, {"name": "c", "image": "makeplane/backend-commercial:v2.6.3",
                                       "command": ["./bin/docker-entrypoint-worker.sh"]})
    data = json.loads(body)
    for index, container in enumerate(data["request"]["object"]["spec"]["containers"]):
        container["name"] = f"{index:03d}-" + "w" * 200 + "-worker"
    answer = client.review(conventions.PATH_MUTATE, data)["response"]
    assert answer["patchType"] == "JSONPatch"
    decision = enforce_server.decision(data["request"]["uid"])
    assert len(decision["changes"]) == FIELD_MAX_ITEMS + 1 and decision["changes"][-1].startswith("... and ")
    assert len(decision["roles"]) == FIELD_MAX_ITEMS + 1
    assert all(len(name) <= FIELD_MAX_CHARS for name in decision["roles"])
    assert _longest_line(enforce_server) < LINE_MAX
