"""What the service logs at INFO: events and internal ids, never patient data or secrets
(issue 16 item 8)."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from identity.app import Service
from identity.config import Settings
from identity.hl7v2.mllp import MLLPClient

from ..conftest import DEMO_DOMAINS

PASSWORD = "s3cr3t-Pw-9931"
PATIENT = ("QUENBYWORTH", "ZAPHIRA", "19610203", "Q7731X", "LARKSPUR", "5550199")


def _with_password(url: str) -> str:
    """The URL with a password (the test servers trust local connections and ignore it)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{PASSWORD}@{host}{port}"))


async def test_info_logs_hold_no_patient_data_and_no_secret(
    fresh_database: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    caplog.set_level(logging.INFO)
    settings = Settings(database={"url": _with_password(fresh_database)}, data_dir=tmp_path,
                        http={"port": 0}, mllp={"port": 0}, domains=DEMO_DOMAINS)
    service = Service(settings)
    await service.start()
    try:
        assert service.hl7 is not None and service.http_port
        admit = (
            "MSH|^~\\&|ADT_A|HOSP|IDENTITY|MPI|20260101120000||ADT^A04^ADT_A01|L1|P|2.5\r"
            "EVN|A04|20260101120000\r"
            "PID|||Q7731X^^^HOSPA||Quenbyworth^Zaphira||19610203|F|||"
            "42 Larkspur Way^^Springfield^IL^62701||555-0199\r"
            "PV1||O\r"
        )
        pix = (
            "MSH|^~\\&|ADT_A|HOSP|IDENTITY|MPI|20260101120001||QBP^Q23^QBP_Q21|L2|P|2.5\r"
            "QPD|IHE PIX Query|Q1|Q7731X^^^HOSPA\r"
            "RCP|I\r"
        )
        async with MLLPClient("127.0.0.1", service.hl7.port) as client:
            assert "MSA|AA|L1" in (await client.send(admit)).decode()
            assert "MSA|AA|L2" in (await client.send(pix)).decode()
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{service.http_port}/fhir/Patient?family=Quenbyworth"
            async with session.get(url, headers={"X-Client-Id": "ADT_A"}) as response:
                assert response.status == 200
                assert (await response.json())["total"] == 1
    finally:
        await service.stop()
    logged = caplog.text.upper()
    assert "EVENT=" in logged  # the service did log its events
    assert PASSWORD.upper() not in logged
    for value in PATIENT:
        assert value not in logged, value
