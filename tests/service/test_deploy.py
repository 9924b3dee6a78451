"""The files of deploy/ stay in step with the code: the example configuration is one the
service accepts, and the systemd unit is one systemd accepts and runs that service."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from identity.config import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_example_configuration_is_valid_and_production_shaped() -> None:
    settings = load_settings(DEPLOY / "identity.toml")
    assert settings.workers > 1
    assert settings.database.url is not None  # an external PostgreSQL, not the embedded one
    assert settings.http.host == settings.mllp.host == "0.0.0.0"
    assert any(d.identifies_person for d in settings.domains)
    assert all(d.sources for d in settings.domains if not d.identifies_person)
    assert [n.name for n in settings.notify] == ["EHR"]


def _unit() -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "identity.service")
    return unit


def test_unit_runs_the_service_with_the_example_configuration() -> None:
    service = _unit()["Service"]
    assert service["ExecStart"].split()[1:] == ["serve"]
    assert service["ExecStart"].split()[0].endswith("/bin/identity")
    assert service["Environment"] == "IDENTITY_CONFIG=/etc/identity/identity.toml"
    assert service["KillSignal"] == "SIGTERM"  # the signal `identity serve` stops gracefully on
    assert service["Restart"] == "on-failure"
    settings = load_settings(DEPLOY / "identity.toml")
    assert service["ReadWritePaths"] == str(settings.data_dir)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    """`systemd-analyze verify` on the unit, its ExecStart pointed at this environment's
    `identity` (verify checks that the program exists); any warning fails."""
    identity = shutil.which("identity")
    assert identity is not None
    text = (DEPLOY / "identity.service").read_text()
    unit = tmp_path / "identity.service"
    unit.write_text(text.replace("/opt/identity/venv/bin/identity", identity))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if str(unit) in line or "identity.service" in line]
    assert done.returncode == 0 and not problems, done.stdout + done.stderr


def test_without_pgserver_and_without_a_database_url_the_command_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The container image leaves the embedded PostgreSQL out: a command run there without
    database.url ends with a message naming the key, not a traceback."""
    import sys

    from identity.cli import main

    monkeypatch.setitem(sys.modules, "pgserver", None)  # ``import pgserver`` fails
    monkeypatch.delenv("IDENTITY_DATABASE__URL", raising=False)
    config = tmp_path / "identity.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n', encoding="utf-8")
    assert main(["migrate", "--config", str(config)]) == 1
    error = capsys.readouterr().err
    assert "database.url" in error and "IDENTITY_DATABASE__URL" in error
