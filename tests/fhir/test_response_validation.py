"""Every kind of response the door sends is a valid FHIR resource (issue 18 item 3): each is
validated with fhir.resources (R4B), and each read-only one is asked again as XML, which the
door serialises through the same models (a response they refuse would be a 500)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B import get_fhir_model_class

from tests.fhir.conftest import HOSPA, Fhir, patient
from tests.fhir.test_pmir import create as pmir_create
from tests.fhir.test_pmir import message


def valid(body: Any, resource_type: str, kind: str | None = None) -> None:
    assert body["resourceType"] == resource_type, body
    get_fhir_model_class(resource_type).model_validate(body)
    if kind is not None:
        assert body["type"] == kind


async def test_every_response_type_validates(fhir: Fhir) -> None:
    seen: set[tuple[str, str | None]] = set()
    xml_again: list[tuple[str, str, Any, dict[str, str] | None]] = []

    async def call(method: str, path: str, body: Any = None, *, params: Any = None,
                   headers: dict[str, str] | None = None, expect: int,
                   resource_type: str | None, kind: str | None = None) -> Any:  # fmt: skip
        status, out, _ = await fhir.call(method, path, body, client="ADT_A", params=params,
                                         headers=headers)
        assert status == expect, (method, path, status, out)
        if resource_type is not None:
            valid(out, resource_type, kind)
            seen.add((resource_type, kind))
        if method == "GET" or (method == "POST" and kind == "batch-response"):
            xml_again.append((method, path, body, params))
        return out

    created = await call("POST", "/Patient", patient(HOSPA, "V1"), expect=201,
                         resource_type="Patient")
    rid = created["id"]
    await call("PUT", f"/Patient/{rid}", {**created, "birthDate": "1980-03-13"}, expect=200,
               resource_type="Patient")
    await call("GET", f"/Patient/{rid}", expect=200, resource_type="Patient")
    await call("GET", f"/Patient/{rid}/_history/1", expect=200, resource_type="Patient")
    await call("GET", f"/Patient/{rid}", params={"_elements": "name"}, expect=200,
               resource_type="Patient")
    await call("GET", f"/Patient/{rid}/_history", expect=200, resource_type="Bundle",
               kind="history")
    await call("GET", "/Patient", params={"family": "smith", "_count": "1"}, expect=200,
               resource_type="Bundle", kind="searchset")
    await call("GET", "/Patient", params={"family": "smith", "_summary": "count"}, expect=200,
               resource_type="Bundle", kind="searchset")
    await call("POST", "/Patient/$match", patient(HOSPA, "V1"), expect=200,
               resource_type="Bundle", kind="searchset")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{rid}"}},
        {"request": {"method": "GET", "url": "Patient/999999"}}]}
    await call("POST", "", batch, expect=200, resource_type="Bundle", kind="batch-response")
    transaction = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"}, "resource": patient(HOSPA, "V2")}]}
    await call("POST", "", transaction, expect=200, resource_type="Bundle",
               kind="transaction-response")
    await call("POST", "", message([pmir_create("V3")]), expect=200, resource_type="Bundle",
               kind="message")
    await call("GET", "/Patient/$ihe-pix", params={"sourceIdentifier": f"{HOSPA}|V1"},
               expect=200, resource_type="Parameters")
    await call("GET", "/metadata", expect=200, resource_type="CapabilityStatement")
    await call("GET", "/Patient/999999", expect=404, resource_type="OperationOutcome")
    await call("GET", "/Patient", params={"birthdate": "xx1980"}, expect=400,
               resource_type="OperationOutcome")
    await call("DELETE", f"/Patient/{rid}", expect=204, resource_type=None)
    await call("GET", f"/Patient/{rid}", expect=410, resource_type="OperationOutcome")
    await call("GET", f"/Patient/{rid}/_history", expect=200, resource_type="Bundle",
               kind="history")
    assert {("Patient", None), ("Bundle", "searchset"), ("Bundle", "history"),
            ("Bundle", "batch-response"), ("Bundle", "transaction-response"),
            ("Bundle", "message"), ("OperationOutcome", None), ("CapabilityStatement", None),
            ("Parameters", None)} <= seen

    for method, path, body, params in xml_again:
        status, _, response = await _xml(fhir, method, path, body, params)
        assert status < 500, (method, path, status)
        assert response.startswith("<"), (method, path)


async def _xml(fhir: Fhir, method: str, path: str, body: Any,
               params: Any) -> tuple[int, None, str]:  # fmt: skip
    headers = {"Accept": "application/fhir+xml", "X-Client-Id": "ADT_A"}
    async with fhir.session.request(method, fhir.base + path, json=body, params=params,
                                    headers=headers) as response:
        return response.status, None, await response.text()
