"""Defects the fuzzers found in the FHIR door (docs/fuzzing.md), each with the input that showed
it, on a real socket: every one was a 500 and is now a 4xx OperationOutcome."""

from __future__ import annotations

from typing import Any

from tests.fhir.conftest import Fhir


async def refused(fhir: Fhir, method: str, path: str, body: Any = None, **kw: Any) -> Any:
    status, reply, _ = await fhir.call(method, path, body, **kw)
    assert 400 <= status < 500, (status, reply)
    assert reply["resourceType"] == "OperationOutcome"
    return reply


async def test_birthdate_prefix_past_the_calendar_is_400(fhir: Fhir) -> None:
    # lt0001-01-01 and gt9999-12-31: the day before / after overflowed Python's date.
    for value in ("lt0001-01-01", "eb0001", "gt9999-12-31", "sa9999"):
        reply = await refused(fhir, "GET", "/Patient",
                              params=[("address-city", "X"), ("birthdate", value)])
        assert "out of range" in reply["issue"][0]["diagnostics"]


def _patient(**extra: Any) -> dict[str, Any]:
    body = {"resourceType": "Patient",
            "identifier": [{"system": "urn:oid:1.2.3.4.5.1", "value": "HA1002"}],
            "name": [{"family": "EVERYMAN", "given": ["ADAM"]}], "gender": "male",
            "birthDate": "1975-07-04"}
    body.update(extra)
    return body


def _parameters(*parameters: Any) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(parameters)}


async def test_match_input_of_the_wrong_shape_is_400(fhir: Fhir) -> None:
    # Each of these raised TypeError, AttributeError or ValueError in $match: a 500.
    resource = {"name": "resource", "resource": _patient()}
    bodies = [
        _parameters([resource]),  # a parameter that is a list
        {"resourceType": "Parameters", "parameter": True},
        _parameters(resource, {"name": "count", "valueInteger": " "}),
        _parameters(resource, {"name": "count", "valueInteger": [5]}),
        _patient(gender=["male"]),
        _patient(name=[{"use": ["maiden"], "family": "SMITH"}]),
        _patient(name=True),
        _patient(modifierExtension=True),
        _patient(modifierExtension=["x"]),
        _patient(contained=[{"resourceType": ""}]),  # fhir.resources: KeyError 'R4.Type'
        _patient(contained=[{"resourceType": ["Patient"]}]),  # fhir.resources: TypeError
    ]
    for body in bodies:
        await refused(fhir, "POST", "/Patient/$match", body)


async def test_match_given_names_with_a_null_are_read(fhir: Fhir) -> None:
    # FHIR JSON keeps a null in a repeating element when another item has an extension: the
    # null went into Name.given and failed its validation (a 500).
    body = _patient(name=[{"family": "SMITH", "given": [None, "ADA"],
                           "_given": [{"extension": [{"url": "http://x", "valueString": "a"}]},
                                      None]}],
                    address=[{"line": [None, "12 MAIN ST"],
                              "_line": [{"extension": [{"url": "http://x", "valueString": "a"}]},
                                        None]}])
    status, reply, _ = await fhir.call("POST", "/Patient/$match", body)
    assert status == 200 and reply["resourceType"] == "Bundle", reply


def _message(endpoint: Any = "http://example.org/source", entry: Any = None) -> dict[str, Any]:
    history = "urn:uuid:22222222-2222-2222-2222-222222222222"
    entry = entry or {"resource": _patient(), "request": {"method": "POST", "url": "Patient"}}
    return {"resourceType": "Bundle", "type": "message", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
         "resource": {"resourceType": "MessageHeader", "id": "hdr-1",
                      "eventUri": "urn:ihe:iti:pmir:2019:patient-feed",
                      "source": {"endpoint": endpoint}, "focus": [{"reference": history}]}},
        {"fullUrl": history,
         "resource": {"resourceType": "Bundle", "type": "history", "entry": [entry]}}]}


async def test_bundle_that_fhir_resources_chokes_on_is_400(fhir: Fhir) -> None:
    # fhir.resources raised TypeError, AttributeError or KeyError instead of a ValidationError
    # for these: a 500.
    bodies = [
        _message(endpoint=["http://example.org/source"]),  # TypeError: unhashable list
        _message(endpoint=True),  # AttributeError: bool has no startswith
        _message(entry={"resource": {"resourceType": ""}}),  # KeyError 'R4.Type'
        _message(entry={"resource": {"resourceType": ["Patient"]}}),  # TypeError
    ]
    for body in bodies:
        await refused(fhir, "POST", "/$process-message", body, client="ADT_A")


async def test_values_the_database_cannot_hold_are_400(fhir: Fhir) -> None:
    # A NUL character reached PostgreSQL, a number beyond bigint failed in asyncpg's encoder:
    # both were a 500.
    await refused(fhir, "DELETE", "/Patient", client="ADT_A",
                  params={"identifier": "urn:oid:1.2.3.4.5.1|\x00"})
    await refused(fhir, "GET", "/Patient",
                  params=[("_id", "99999999999999999999"), ("family", "SMITH")])
    await refused(fhir, "PUT", "/Patient", _patient(name=[{"family": "SM\x00ITH"}]),
                  client="ADT_A", params={"identifier": "urn:oid:1.2.3.4.5.1|HA1002"})


async def test_control_characters_in_xml_responses(fhir: Fhir) -> None:
    # A record holding a control character (JSON and HL7 v2 carry them, XML 1.0 cannot): its
    # XML rendering failed, a 500. It is written as U+FFFD.
    status, _, _ = await fhir.call("PUT", "/Patient", _patient(name=[{"family": "CTRL\x01X"}]),
                                   client="ADT_A",
                                   params={"identifier": "urn:oid:1.2.3.4.5.1|CTRL1"})
    assert status == 201
    async with fhir.session.get(fhir.base + "/Patient",
                                params={"family": "ctrl", "_format": "xml"}) as response:
        body = await response.text()
        assert response.status == 200, body
    assert "CTRL\ufffdX" in body


async def test_pix_parameters_of_the_wrong_shape_are_400(fhir: Fhir) -> None:
    # POST $ihe-pix read its Parameters without checking their shape: a 500 each.
    source = {"name": "sourceIdentifier",
              "valueIdentifier": {"system": "urn:oid:1.2.3.4.5.1", "value": "HA1001"}}
    target = {"name": "targetSystem", "valueUri": "urn:oid:1.2.3.4.5.2"}
    bodies = [
        _parameters([source, target]),  # the fuzzer's input: a parameter that is a list
        {"resourceType": "Parameters", "parameter": {"name": "sourceIdentifier"}},
        _parameters({"name": "sourceIdentifier", "valueIdentifier": "HA1001"}),
        _parameters({"name": "sourceIdentifier",
                     "valueIdentifier": {"system": "urn:oid:1.2.3.4.5.1", "value": 1001}}),
        _parameters({"name": "sourceIdentifier", "valueString": ["urn:oid:1.2.3.4.5.1|HA1001"]}),
        _parameters(source, {"name": "targetSystem", "valueUri": 5}),
    ]
    for body in bodies:
        await refused(fhir, "POST", "/Patient/$ihe-pix", body)


async def test_ids_with_non_ascii_digits_are_not_found(fhir: Fhir) -> None:
    # Patient/² (a digit to str.isdigit, not to int()): a 500 on read and vread; in a PMIR
    # request.url and a merge's link reference too.
    await refused(fhir, "GET", "/Patient/\u00b2")
    await refused(fhir, "GET", "/Patient/\u00b2/_history/1")
    entry = {"resource": _patient(), "request": {"method": "DELETE", "url": "Patient/\u00b2"}}
    reply = await fhir.call("POST", "/$process-message", _message(entry=entry), client="ADT_A")
    assert reply[0] == 200 and reply[1]["entry"][0]["resource"]["response"]["code"] == \
        "fatal-error"
    merge = _patient(active=False, link=[{"type": "replaced-by",
                                          "other": {"reference": "Patient/\u00b2"}}])
    await refused(fhir, "PUT", "/Patient", merge, client="ADT_A",
                  params={"identifier": "urn:oid:1.2.3.4.5.1|HA1002"})


async def test_search_form_that_is_not_utf8_is_400(fhir: Fhir) -> None:
    # POST _search decoded its form body as UTF-8 and let UnicodeDecodeError through: a 500.
    async with fhir.session.post(
        fhir.base + "/Patient/_search", data=b"\x80family=everywoman&birthdate=1980-03-12",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as response:
        assert response.status == 400
        assert (await response.json())["resourceType"] == "OperationOutcome"
