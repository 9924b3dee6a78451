"""The HL7 v2 door's limits over real sockets: the tokenizer's caps on segments and repetitions
(the frame size and idle timeout are in test_front_door_framing.py). Each shows the protocol's
answer, that nothing was applied and that the service goes on serving."""

from __future__ import annotations

import logging

import pytest

from identity.errors import UnknownIdentifier
from identity.hl7v2.mllp import MLLPClient
from identity.hl7v2.service import Hl7Service
from tests.core.helpers import ref
from tests.hl7v2.conftest import Start
from tests.hl7v2.messages import adt, errs, msa, reply


async def registered(service: Hl7Service, value: str) -> bool:
    try:
        await service.mpi.find_record(ref("HOSPA", value))
    except UnknownIdentifier:
        return False
    return True


async def test_more_segments_than_max_segments_is_AR_207_and_nothing_applied(
    start_service: Start, caplog: pytest.LogCaptureFixture
) -> None:
    service = await start_service(hl7={"max_segments": 6})
    base = adt("A04", "SG1^^^HOSPA", control="SEG1")  # MSH EVN PID PV1
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        with caplog.at_level(logging.WARNING, logger="identity.hl7v2"):
            answer = reply(await client.send(base + "NTE|1||a\rNTE|2||b\rNTE|3||c\r"))
        assert msa(answer) == "AR"
        assert answer.segment("MSA").value(2) == "SEG1"  # type: ignore[union-attr]
        assert errs(answer) == [("NTE^3", "207")]
        assert "event=hl7_limit_exceeded limit=6 location=NTE^3" in caplog.text
        assert not await registered(service, "SG1")
        # the same connection goes on: a message within the cap is applied
        assert msa(reply(await client.send(base.replace("SEG1", "SEG2") + "NTE|1||a\r"))) == "AA"
    assert await registered(service, "SG1")


async def test_more_repetitions_than_max_repetitions_is_AR_207_and_nothing_applied(
    start_service: Start,
) -> None:
    service = await start_service(hl7={"max_repetitions": 3})
    four = "~".join(f"RP{n}^^^HOSPA" for n in range(1, 5))
    async with MLLPClient("127.0.0.1", service.port, timeout=10.0) as client:
        answer = reply(await client.send(adt("A04", four)))
        assert msa(answer) == "AR"
        assert errs(answer) == [("PID^1^3^4", "207")]
        assert not await registered(service, "RP1")
        three = "~".join(f"RP{n}^^^HOSPA" for n in range(1, 4))
        assert msa(reply(await client.send(adt("A04", three)))) == "AA"
    assert await registered(service, "RP1")
