"""`identity review list|show|decide|undo` and `identity person show`, run as the command is,
against the test database."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from identity.mpi import Mpi
from tests.conftest import DEMO_DOMAINS, with_search_path
from tests.steward.conftest import duplicate_pair


@pytest.fixture
def config(tmp_path: Path, run_database_url: str, schema: str) -> Path:
    """A configuration naming the test's database schema and the test domains."""
    lines = [f'[database]\nurl = "{with_search_path(run_database_url, schema)}"\n']
    for domain in DEMO_DOMAINS:
        lines.append("[[domains]]")
        for key, value in domain.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    path = tmp_path / "identity.toml"
    path.write_text("\n".join(lines))
    return path


async def identity(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    def call() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "identity", *args[:2], "--config", str(config), *args[2:]],
            capture_output=True, text=True, timeout=120,
            env={**os.environ, "USER": "tester"},
        )  # fmt: skip

    return await asyncio.to_thread(call)


async def test_review_list_show_decide_undo_and_person_show(mpi: Mpi, config: Path) -> None:
    one, two, item = await duplicate_pair(mpi)

    listed = await identity(config, "review", "list")
    assert listed.returncode == 0, listed.stderr
    assert "open 1" in listed.stdout
    assert f"\n{item.id} " in listed.stdout and "HOSPA A2: Smith John" in listed.stdout

    as_json = json.loads((await identity(config, "review", "list", "--json")).stdout)
    assert [i["id"] for i in as_json["items"]] == [item.id]

    shown = await identity(config, "review", "show", str(item.id))
    assert shown.returncode == 0, shown.stderr
    assert f"review item {item.id} (version 1)" in shown.stdout
    assert "HOSPA A2" in shown.stdout and "HOSPA A1" in shown.stdout
    assert "prior" in shown.stdout and "→ p =" in shown.stdout  # the waterfall
    assert "same_source_duplicate" in shown.stdout
    detail = json.loads((await identity(config, "review", "show", str(item.id), "--json")).stdout)
    assert detail["item"]["id"] == item.id and detail["explanation"]["comparisons"]

    stale = await identity(config, "review", "decide", str(item.id), "same", "--version", "9")
    assert stale.returncode == 1 and "version" in stale.stderr

    decided = await identity(config, "review", "decide", str(item.id), "same",
                             "--reason", "same patient", "--steward", "erin", "--json")
    assert decided.returncode == 0, decided.stderr
    command_id = json.loads(decided.stdout)["command_id"]
    assert (await mpi.get_record(two.record.id)).person_id == one.person.id
    assert (await mpi.decisions()).entries[0].actor == "steward:erin"

    person = await identity(config, "person", "show", str(one.person.id))
    assert person.returncode == 0, person.stderr
    assert f"enterprise id {one.person.enterprise_id}" in person.stdout
    assert "golden view" in person.stdout and "A2" in person.stdout
    by_enterprise_id = await identity(config, "person", "show", one.person.enterprise_id,
                                      "--json")
    assert json.loads(by_enterprise_id.stdout)["person"]["id"] == one.person.id

    undone = await identity(config, "review", "undo", command_id)
    assert undone.returncode == 0, undone.stderr
    assert "undid" in undone.stdout
    assert (await mpi.get_record(two.record.id)).person_id == two.person.id
    assert (await mpi.decisions()).entries[0].actor == "steward:tester"  # $USER

    missing = await identity(config, "review", "show", "999999")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
