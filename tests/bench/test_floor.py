"""The benchmark's floor is a correct webhook: it echoes the request's uid and refuses non-reviews."""

from __future__ import annotations

import json
import uuid

from tests.bench.floor import review_response
from tests.bench.load import _expected


def test_the_floor_allows_under_the_requests_own_uid():
    uid = str(uuid.uuid4())
    request = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": uid}}).encode()
    status, body = review_response(request)
    assert status == 200
    assert json.loads(body) == {
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": uid, "allowed": True},
    }
    assert all(part in body for part in _expected(request))  # what the load generator accepts


def test_the_floor_refuses_what_is_not_an_admission_review():
    for junk in (b"", b"{", b"[]", b'{"request": {}}', b'{"request": null}'):
        status, body = review_response(junk)
        assert status == 400 and b"AdmissionReview" in body
