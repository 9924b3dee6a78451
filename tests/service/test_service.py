"""The service as a whole: embedded PostgreSQL, /healthz, restarts, the CLI and signals."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil

from identity.app import Service
from identity.config import Settings
from identity.model import Decision
from identity.mpi import Envelope, Register

from ..conftest import DEMO_DOMAINS
from ..core.helpers import person, ref
from ..waiting import eventually


def _embedded_settings(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, http={"port": 0}, mllp={"port": 0}, domains=DEMO_DOMAINS)


def _postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(pgdata) in part for part in cmdline):
            return True
    return False


async def _healthz(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            return response.status, await response.json()


async def test_embedded_database_serves_healthz_and_survives_restart(data_dir: Path) -> None:
    service = Service(_embedded_settings(data_dir))
    await service.start()
    try:
        assert service.http_port
        status, body = await _healthz(service.http_port)
        assert status == 200
        assert body["status"] == "ok" and body["database"]["mode"] == "embedded"
        assert service.mpi is not None
        assert gc.get_freeze_count() > 0  # start-up's long-lived objects left out of full GCs
        first = await service.mpi.handle(
            Register(subject=person("HOSPA", "A1")), Envelope(actor="t", source="ADT_A")
        )
        assert first.decision == Decision.NEW_PERSON
    finally:
        await service.stop()
    assert gc.get_freeze_count() == 0
    pgdata = data_dir / "postgres"
    assert not _postgres_running(pgdata), "embedded server must stop with the service"

    again = Service(_embedded_settings(data_dir))
    await again.start()
    try:
        assert again.mpi is not None
        record = await again.mpi.find_record(ref("HOSPA", "A1"))
        assert record.person_id == first.person.id
        assert record.enterprise_id == first.person.enterprise_id
    finally:
        await again.stop()


async def test_healthz_reports_an_unreachable_database(data_dir: Path) -> None:
    service = Service(_embedded_settings(data_dir))
    await service.start()
    try:
        assert service.db is not None and service.embedded is not None and service.http_port
        await service.embedded.stop()  # the database goes away under a running service
        status, body = await _healthz(service.http_port)
        assert status == 503
        assert body["database"]["ok"] is False
    finally:
        await service.stop()  # stopping a service whose database already went away works too


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "identity", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_version_and_help() -> None:
    version = _cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("identity ")
    for command in ("serve", "migrate", "domains"):
        helped = _cli(command, "--help")
        assert helped.returncode == 0 and f"identity {command}" in helped.stdout


def test_cli_rejects_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nprot = 1\n")
    result = _cli("--config", str(bad), "migrate")
    assert result.returncode == 2
    assert "http.prot: unknown key" in result.stderr


async def test_cli_migrate_and_domains(fresh_database: str) -> None:
    env = {"IDENTITY_DATABASE__URL": fresh_database}
    demo = str(Path(__file__).parents[2] / "identity" / "demo" / "demo.toml")
    first = await asyncio.to_thread(_cli, "--config", demo, "migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied migrations: [1" in first.stdout
    second = await asyncio.to_thread(_cli, "--config", demo, "migrate", env=env)
    assert "up to date" in second.stdout
    listed = await asyncio.to_thread(_cli, "--config", demo, "domains", env=env)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^HOSPA\s+1\.3\.6\.1\.4\.1\.21367\.2026\.2\.1", listed.stdout, re.M)
    assert re.search(r"^MPI\s+.*yes\s+yes", listed.stdout, re.M)


async def test_serve_stops_gracefully_on_sigterm(data_dir: Path) -> None:
    """`identity serve` with no configuration file: embedded database, /healthz, SIGTERM."""
    env = {
        **os.environ,
        "IDENTITY_DATA_DIR": str(data_dir),
        "IDENTITY_HTTP__PORT": "0",
        "IDENTITY_MLLP__PORT": "0",
    }
    env.pop("IDENTITY_CONFIG", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "identity",
        "serve",
        env=env,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    assert proc.stderr is not None
    port = None
    lines: list[str] = []
    try:
        while port is None:
            line = (await asyncio.wait_for(proc.stderr.readline(), 60)).decode()
            assert line, "serve exited early:\n" + "".join(lines)
            lines.append(line)
            match = re.search(r"event=service_started .*http=127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
        status, body = await _healthz(port)
        assert status == 200 and body["database"]["mode"] == "embedded"
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 60)
        code = await proc.wait()
    text = "".join(lines) + rest.decode()
    assert code == 0, text
    assert "loop=uvloop" in text  # installed with the service: `serve` runs on it by default
    assert "event=embedded_postgres_stopped" in text and "event=service_stopped" in text
    assert not _postgres_running(data_dir / "postgres")


def test_cli_generate_and_evaluate(data_dir: Path) -> None:
    out = data_dir / "population"
    made = _cli("generate", "--persons", "300", "--duplicates", "0.2", "--seed", "7",
                "--hard", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert {p.name for p in out.iterdir()} == {"population.csv", "patients.ndjson", "adt.hl7"}
    # MLLP-framed, as mllp_send sends a file: <VT>message<FS><CR>, from the demo's ADT_A
    assert (out / "adt.hl7").read_text().startswith("\x0bMSH|^~\\&|ADT_A|HOSPA|")
    scored = _cli("evaluate", str(out / "population.csv"))
    assert scored.returncode == 0, scored.stderr
    figures = json.loads(scored.stdout)
    assert figures["pairwise_precision"] >= 0.99 and figures["pair_completeness"] >= 0.97
    assert figures["twin_links"] == 0 and figures["jr_sr_links"] == 0


async def test_cli_train_writes_a_model_from_the_index(
    fresh_database: str, data_dir: Path
) -> None:
    from identity.app import open_database
    from identity.model import AuthorityRef, Demographics, IdentifierRef, RecordInput
    from identity.mpi import Mpi
    from identity.store.migrate import migrate
    from matching.synth import generate

    settings = Settings(database={"url": fresh_database},
                        domains=[{"namespace": "STMARY"}, {"namespace": "CITYGEN"},
                                 {"namespace": "NORTHCLINIC"}, {"namespace": "LABCORE"},
                                 {"namespace": "RXPLUS"}])
    db, _ = await open_database(settings)
    try:
        async with db.connection() as conn:
            await migrate(conn)
        core = Mpi(db, settings)
        await core.start()
        for record in generate(150, 0.2, seed=2):
            await core.handle(Register(subject=RecordInput(
                    identifier=IdentifierRef(
                        value=record.mrn, authority=AuthorityRef(namespace=record.source_domain)
                    ),
                    demographics=Demographics.model_validate(record.demographics),
                )), Envelope(actor="test", source=record.source_domain))
    finally:
        await db.close()
    output = data_dir / "model.json"
    await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
    trained = await asyncio.to_thread(
        _cli, "train", "--output", str(output), env={"IDENTITY_DATABASE__URL": fresh_database}
    )
    assert trained.returncode == 0, trained.stderr
    model = json.loads(await asyncio.to_thread(output.read_text))
    assert model["format"] == "identity-matching-model"
    assert 0 < model["prior"] < 1
    assert {c["name"] for c in model["comparisons"]} >= {"family_name", "birth_date"}


async def test_cli_import_loads_a_generated_population(
    fresh_database: str, data_dir: Path
) -> None:
    out = data_dir / "population"
    made = await asyncio.to_thread(
        _cli, "generate", "--persons", "3000", "--seed", "4", "--out", str(out), "--formats", "csv",
        "--domains", "synthetic",  # the generator's own domains, which bench.toml configures
    )
    assert made.returncode == 0, made.stderr
    demo = Path(__file__).parents[2] / "benchmarks" / "bench.toml"
    env = {"IDENTITY_DATABASE__URL": fresh_database}
    loaded = await asyncio.to_thread(
        _cli, "--config", str(demo), "import", "--bulk", "--json", str(out / "population.csv"),
        env=env,
    )
    assert loaded.returncode == 0, loaded.stderr
    report = json.loads(loaded.stdout)
    # 3,000 true persons (each record that is not linked makes one, with or without review
    # items): fewer would mean false merges; a few more, missed duplicates
    persons = report["new_person"] + report["review"]
    assert report["read"] > 3000 and 3000 <= persons <= 3100
    # run again, by either path: every record is there as sent, nothing is written
    for path in ("--bulk", "--no-bulk"):
        resumed = await asyncio.to_thread(
            _cli, "--config", str(demo), "import", path, "--json", str(out / "population.csv"),
            env=env,
        )
        assert resumed.returncode == 0, resumed.stderr
        summary = json.loads(resumed.stdout)
        assert summary["skipped"] == summary["read"] == report["read"]
        assert "rec/s" not in resumed.stderr and "it/s" not in resumed.stderr  # no TTY, no bar


async def test_service_serves_the_fhir_door(data_dir: Path) -> None:
    service = Service(_embedded_settings(data_dir))
    await service.start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{service.http_port}/fhir/metadata"
            async with session.get(url) as response:
                assert response.status == 200
                body = await response.json(content_type=None)
        assert body["resourceType"] == "CapabilityStatement"
    finally:
        await service.stop()


async def test_service_answers_hl7_over_mllp(data_dir: Path) -> None:
    from identity.hl7v2.mllp import MLLPClient

    service = Service(_embedded_settings(data_dir))
    await service.start()
    try:
        assert service.hl7 is not None
        message = (
            "MSH|^~\\&|ADT_A|HOSP|IDENTITY|MPI|20260101120000||ADT^A04^ADT_A01|M1|P|2.5\r"
            "EVN|A04|20260101120000\r"
            "PID|||A77^^^HOSPA||Doe^Jane||19700101|F\r"
            "PV1||O\r"
        )
        async with MLLPClient("127.0.0.1", service.hl7.port) as client:
            reply = (await client.send(message)).decode()
        assert "MSA|AA|M1" in reply
        assert service.mpi is not None
        record = await service.mpi.find_record(ref("HOSPA", "A77"))
        assert record.person_id is not None
    finally:
        await service.stop()


async def test_fed_over_hl7_found_over_fhir_and_the_reverse(data_dir: Path) -> None:
    from identity.hl7v2.mllp import MLLPClient
    from identity.hl7v2.tokenizer import parse_message

    service = Service(_embedded_settings(data_dir))
    await service.start()
    try:
        assert service.hl7 is not None
        base = f"http://127.0.0.1:{service.http_port}/fhir"
        a04 = (
            "MSH|^~\\&|ADT_A|HOSP|IDENTITY|MPI|20260101120000||ADT^A04^ADT_A01|M1|P|2.5\r"
            "EVN|A04|20260101120000\r"
            "PID|||A77^^^HOSPA||Moreau^Elodie||19750214|F|||3 Rue Haute^^Lyon^^69001^FR\r"
            "PV1||O\r"
        )
        async with MLLPClient("127.0.0.1", service.hl7.port) as client:
            assert "MSA|AA|M1" in (await client.send(a04)).decode()
        async with aiohttp.ClientSession() as session:
            # HL7 -> FHIR: the record fed over MLLP is a Patient to PDQm
            async with session.get(
                f"{base}/Patient", params={"identifier": "urn:oid:1.2.3.4.5.1|A77"}
            ) as response:
                assert response.status == 200
                bundle = await response.json(content_type=None)
            assert bundle["total"] == 1
            assert bundle["entry"][0]["resource"]["name"][0]["family"] == "Moreau"
            # FHIR -> HL7: a Patient fed over ITI-104 is cross-referenced by an ITI-9 query
            patient = {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:oid:1.2.3.4.5.2", "value": "B55"}],
                "name": [{"family": "Moreau", "given": ["Elodie"]}],
                "gender": "female",
                "birthDate": "1975-02-14",
                "address": [{"line": ["3 Rue Haute"], "city": "Lyon", "postalCode": "69001",
                             "country": "FR"}],
            }
            async with session.put(
                f"{base}/Patient",
                params={"identifier": "urn:oid:1.2.3.4.5.2|B55"},
                json=patient,
                headers={"X-Client-Id": "ADT_B", "Content-Type": "application/fhir+json"},
            ) as response:
                assert response.status == 201, await response.text()
        q23 = (
            "MSH|^~\\&|PIXC|HOSP|IDENTITY|MPI|20260101120001||QBP^Q23^QBP_Q21|Q1|P|2.5\r"
            "QPD|IHE PIX Query|T1|B55^^^HOSPB|^^^HOSPA\r"
            "RCP|I\r"
        )
        async with MLLPClient("127.0.0.1", service.hl7.port) as client:
            reply = parse_message(await client.send(q23))
        assert reply.segment("MSA").value(1) == "AA"
        assert reply.segment("QAK").value(2) == "OK"
        assert reply.segment("PID").value(3) == "A77"
    finally:
        await service.stop()


async def test_one_index_behind_both_doors(fresh_database: str) -> None:
    """A record fed over HL7 v2 is found over FHIR, and one fed over FHIR is found over HL7 v2:
    one service, one core, one database behind both front doors."""
    from identity.hl7v2.mllp import MLLPClient

    from ..hl7v2.messages import adt, msa, pdq_query, pid3, pix_query, qak, reply

    settings = Settings(database={"url": fresh_database}, http={"port": 0}, mllp={"port": 0},
                        domains=DEMO_DOMAINS)
    service = Service(settings)
    await service.start()
    base = f"http://127.0.0.1:{service.http_port}/fhir"
    json_type = {"Accept": "application/fhir+json"}
    try:
        assert service.hl7 is not None
        async with MLLPClient("127.0.0.1", service.hl7.port) as mllp, aiohttp.ClientSession(
            headers=json_type
        ) as http:
            # HL7 v2 in ...
            ack = reply(await mllp.send(adt("A04", "X1^^^HOSPA", name="DOE^JANE", dob="19700101",
                                            sex="F")))
            assert msa(ack) == "AA"
            # ... FHIR out: ITI-78 by identifier and by demographics, ITI-83
            params = {"identifier": "urn:oid:1.2.3.4.5.1|X1"}
            async with http.get(f"{base}/Patient", params=params) as response:
                found = await response.json(content_type=None)
            assert response.status == 200 and found["total"] == 1
            jane = found["entry"][0]["resource"]
            assert jane["name"][0]["family"] == "DOE" and jane["birthDate"] == "1970-01-01"
            async with http.get(f"{base}/Patient",
                                params={"family": "doe", "birthdate": "1970"}) as response:
                by_name = await response.json(content_type=None)
            assert [e["resource"]["id"] for e in by_name["entry"]] == [jane["id"]]
            async with http.get(f"{base}/Patient/$ihe-pix",
                                params={"sourceIdentifier": "urn:oid:1.2.3.4.5.1|X1"}) as response:
                pix = await response.json(content_type=None)
            assert response.status == 200
            enterprise = [p["valueIdentifier"]["value"] for p in pix["parameter"]
                          if p["name"] == "targetIdentifier"]
            assert len(enterprise) == 1  # the enterprise ID: the only other identifier

            # FHIR in ...
            roe = {"resourceType": "Patient",
                   "identifier": [{"system": "urn:oid:1.2.3.4.5.2", "value": "Y1"}],
                   "name": [{"family": "Roe", "given": ["Richard"]}],
                   "gender": "male", "birthDate": "1961-07-04"}
            async with http.put(f"{base}/Patient",
                                params={"identifier": "urn:oid:1.2.3.4.5.2|Y1"}, json=roe,
                                headers={"X-Client-Id": "ADT_B",
                                         "Content-Type": "application/fhir+json"}) as response:
                assert response.status == 201, await response.text()
            # ... HL7 v2 out: ITI-9 gives the enterprise ID, ITI-21 finds the demographics
            pix_reply = reply(await mllp.send(pix_query("Y1^^^HOSPB")))
            assert msa(pix_reply) == "AA" and qak(pix_reply) == "OK"
            pid = pix_reply.segment("PID")
            assert pid is not None and len(pid3(pid)) == 1 and "MPI" in pid3(pid)[0]
            pdq_reply = reply(await mllp.send(pdq_query("@PID.5.1^ROE~@PID.7^19610704")))
            assert qak(pdq_reply) == "OK"
            found_pids = pdq_reply.segments("PID")
            assert len(found_pids) == 1
            assert any(rep.startswith("Y1^^^HOSPB") for rep in pid3(found_pids[0]))
            assert found_pids[0].value(5) == "Roe"
    finally:
        await service.stop()


async def test_calibrate_applies_while_the_service_runs_on_the_embedded_database(
    data_dir: Path, tmp_path: Path
) -> None:
    """`identity calibrate --apply` with the running service's configuration: it attaches to the
    service's embedded server and leaves it running; the service uses the new model version
    for its next message without a restart."""
    config = tmp_path / "identity.toml"
    lines = [f'data_dir = "{data_dir}"\n']
    for domain in DEMO_DOMAINS:
        lines.append("[[domains]]\n" + "".join(
            f"{k} = {json.dumps(v)}\n" for k, v in domain.items()))
    await asyncio.to_thread(config.write_text, "\n".join(lines))
    service = Service(Settings(data_dir=data_dir, http={"port": 0}, mllp={"port": 0},
                               domains=DEMO_DOMAINS))
    await service.start()
    try:
        assert service.mpi is not None
        for i, given in enumerate(["Ann", "Anne", "Bob", "Carl", "Dora", "Eve"]):
            await service.mpi.handle(
                Register(subject=person("HOSPA", f"C{i}", given=given)),
                Envelope(actor="t", source="ADT_A"),
            )
        done = await asyncio.to_thread(
            _cli, "calibrate", "--apply", "--json", "--config", str(config),
            "--output-dir", str(tmp_path / "models"),
        )
        assert done.returncode == 0, done.stderr
        version = json.loads(done.stdout)["version"]
        await eventually(lambda: service.mpi.follower.version == version,
                         what="the running service follows the applied version")
        # the embedded server is still the service's: the next message is taken
        after = await service.mpi.handle(
            Register(subject=person("HOSPA", "C9", given="Fay")),
            Envelope(actor="t", source="ADT_A"),
        )
        assert after.record.identifier == "C9"
        assert service.mpi.matcher.name == f"calibrated-v{version}"
    finally:
        await service.stop()
    assert not _postgres_running(data_dir / "postgres")


async def test_a_request_body_over_the_limit_is_413_operation_outcome(data_dir: Path) -> None:
    """[http] max_body_bytes: a larger body is refused before it is read whole, in FHIR's own
    form, and the service goes on answering."""
    settings = Settings(data_dir=data_dir, http={"port": 0, "max_body_bytes": 4096},
                        mllp={"port": 0}, domains=DEMO_DOMAINS)
    service = Service(settings)
    await service.start()
    try:
        base = f"http://127.0.0.1:{service.http_port}/fhir"
        big = {"resourceType": "Parameters",
               "parameter": [{"name": "resource", "valueString": "x" * 8192}]}
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{base}/Patient/$match", json=big,
                                    headers={"X-Client-Id": "ADT_A"}) as response:
                assert response.status == 413
                outcome = await response.json(content_type=None)
                assert outcome["resourceType"] == "OperationOutcome"
                assert outcome["issue"][0]["code"] == "too-long"
            async with session.get(f"{base}/metadata") as response:
                assert response.status == 200
    finally:
        await service.stop()
