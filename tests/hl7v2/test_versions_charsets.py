"""Issue 18 item 9: the HL7 v2 versions (MSH-12) and character sets (MSH-18) the door takes,
over real sockets against the real PostgreSQL. Versions 2.3.1 to 2.8.x are accepted, others
are AR 203 at MSH^1^12; MSH-18 ASCII, 8859/1 and UNICODE UTF-8 (and the other table 0211 sets
the tokenizer knows) are decoded as declared; an MSH-18 the door does not read is AE 103 at
MSH^1^18, and bytes that are not valid in the declared set AE 102 there: nothing is stored
under a name decoded by guesswork."""

from __future__ import annotations

import pytest

from identity.errors import UnknownIdentifier
from identity.hl7v2.handler import supported_version
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from identity.model import AuthorityRef, IdentifierRef
from tests.hl7v2.messages import adt, errs, msa, pdq_query, qak, reply

ACCEPTED = ["2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2"]
REFUSED = ["2.2", "2.3", "2.9", "2.10", "3.0"]


def ref(value: str) -> IdentifierRef:
    return IdentifierRef(value=value, authority=AuthorityRef(namespace="HOSPA"))


async def stored(service: Hl7Service, value: str) -> bool:
    try:
        await service.mpi.find_record(ref(value))
    except UnknownIdentifier:
        return False
    return True


@pytest.mark.parametrize("version", ACCEPTED)
async def test_feed_and_pdq_in_every_accepted_version(
    service: Hl7Service, client: MLLPClient, version: str
) -> None:
    value = "V" + version.replace(".", "")
    feed = adt("A04", f"{value}^^^HOSPA", name=f"VERSION{value}^ANNA", version=version)
    answer = reply(await client.send(feed))
    assert msa(answer) == "AA" and answer.version == version
    query = pdq_query(f"@PID.5.1.1^VERSION{value}").replace("|2.5\r", f"|{version}\r", 1)
    answer = reply(await client.send(query))
    assert (msa(answer), qak(answer)) == ("AA", "OK") and answer.version == version


@pytest.mark.parametrize("version", REFUSED)
async def test_other_versions_are_AR_203_at_MSH_12(
    service: Hl7Service, client: MLLPClient, version: str
) -> None:
    value = "W" + version.replace(".", "")
    answer = reply(await client.send(adt("A04", f"{value}^^^HOSPA", version=version)))
    assert msa(answer) == "AR" and errs(answer) == [("MSH^1^12", "203")]
    assert not await stored(service, value)


@pytest.mark.parametrize(
    ("charset", "codec"),
    [("", "ascii"), ("ASCII", "ascii"), ("8859/1", "latin-1"), ("UNICODE UTF-8", "utf-8")],
)
async def test_declared_character_sets_are_decoded_as_declared(
    service: Hl7Service, client: MLLPClient, charset: str, codec: str
) -> None:
    value = "C" + (charset.replace(" ", "").replace("/", "") or "NONE")
    name = "NUNEZ^JOSE" if codec == "ascii" else "NÚÑEZ^JOSÉ"
    feed = adt("A04", f"{value}^^^HOSPA", name=name, charset=charset, version="2.3.1")
    answer = reply(await client.send(feed.encode(codec)))
    assert msa(answer) == "AA"
    record = await service.mpi.find_record(ref(value))
    family, given = name.split("^")
    assert record.demographics.names[0].family == family  # type: ignore[index]
    assert record.demographics.names[0].given == (given,)  # type: ignore[index]


async def test_8859_1_name_is_decoded_right_and_answered_in_8859_1(
    service: Hl7Service, client: MLLPClient
) -> None:
    feed = adt("A04", "C88591B^^^HOSPA", name="GRÄßLE^RENÉE", charset="8859/1")
    raw = feed.encode("latin-1")
    assert b"GR\xc4\xdfLE^REN\xc9E" in raw  # one byte per letter: not UTF-8
    assert msa(reply(await client.send(raw))) == "AA"
    query = pdq_query("@PID.5.1.1^GRÄßLE").replace("|2.5\r", "|2.5||||||8859/1\r", 1)
    answer_bytes = await client.send(query.encode("latin-1"))
    assert b"GR\xc4\xdfLE^REN\xc9E" in answer_bytes
    answer = reply(answer_bytes)
    assert answer.declared_charset == "8859/1"
    assert answer.segment("PID").value(5, 1, 2) == "RENÉE"  # type: ignore[union-attr]


@pytest.mark.parametrize("charset", ["EBCDIC", "UNICODE UTF-16", "ISO IR87", "UNICODE"])
async def test_unsupported_character_set_is_AE_103_at_MSH_18_and_nothing_is_stored(
    service: Hl7Service, client: MLLPClient, charset: str
) -> None:
    feed = adt("A04", "C103^^^HOSPA", name="MÜLLER^JÖRG", charset=charset)
    answer = reply(await client.send(feed.encode("utf-8")))
    assert msa(answer) == "AE" and errs(answer) == [("MSH^1^18", "103")]
    assert not await stored(service, "C103")


async def test_bytes_not_valid_in_the_declared_set_are_AE_102_at_MSH_18(
    service: Hl7Service, client: MLLPClient
) -> None:
    for charset, raw in (
        ("ASCII", "MÜLLER^JÖRG".encode()),
        ("UNICODE UTF-8", "MÜLLER^JÖRG".encode("latin-1")),
    ):
        feed = adt("A04", "C102^^^HOSPA", name="NAME", charset=charset).encode("ascii")
        answer = reply(await client.send(feed.replace(b"NAME", raw)))
        assert msa(answer) == "AE" and errs(answer) == [("MSH^1^18", "102")]
    assert not await stored(service, "C102")


def test_supported_version() -> None:
    assert all(supported_version(v) for v in ACCEPTED)
    assert not any(supported_version(v) for v in [*REFUSED, "", "2", "2.x", "２.５"])
