"""Configuration: TOML file, IDENTITY_* environment variables, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from identity.config import load_settings
from identity.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "identity.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_CONFIG", raising=False)
    settings = load_settings()
    assert settings.database.url is None
    assert settings.http.port == 8080 and settings.mllp.port == 2575
    assert settings.mpi.enterprise_namespace == "MPI"
    assert settings.domains == []


def test_limits_have_their_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/operations.md, *Limits*."""
    monkeypatch.delenv("IDENTITY_CONFIG", raising=False)
    settings = load_settings()
    assert (settings.mllp.max_message_bytes, settings.mllp.idle_timeout) == (1 << 20, 300.0)
    assert (settings.mllp.max_connections, settings.mllp.max_connections_per_client) == (256, 32)
    assert (settings.hl7.max_segments, settings.hl7.max_repetitions) == (1000, 100)
    assert settings.http.max_body_bytes == 8 << 20
    assert (settings.http.request_timeout, settings.http.idle_timeout) == (60.0, 75.0)
    assert settings.fhir.max_page_size == 200


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
data_dir = "/var/lib/identity"
[database]
url = "postgresql://u@db/identity"
[http]
port = 9090
[[domains]]
namespace = "HOSPA"
oid = "1.2.3.4"
sources = ["ADT_A"]
identifies_person = false
""",
    )
    settings = load_settings(path)
    assert str(settings.data_dir) == "/var/lib/identity"
    assert settings.database.url == "postgresql://u@db/identity"
    assert settings.http.port == 9090
    assert settings.domains[0].namespace == "HOSPA"
    assert settings.domains[0].sources == ["ADT_A"]


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "[http]\nport = 9090\n")
    monkeypatch.setenv("IDENTITY_HTTP__PORT", "9191")
    monkeypatch.setenv("IDENTITY_MPI__AUTO_REGISTER_DOMAINS", "true")
    settings = load_settings(path)
    assert settings.http.port == 9191
    assert settings.mpi.auto_register_domains is True


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, "[mllp]\nport = 3000\n")
    monkeypatch.setenv("IDENTITY_CONFIG", str(path))
    assert load_settings().mllp.port == 3000


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[http]\nprot = 1\n", "http.prot: unknown key"),
        ("colour = 'blue'\n", "colour: unknown key"),
        ("[http]\nport = 'eighty'\n", "http.port"),
        ("[mllp]\nport = 70000\n", "mllp.port"),
        ("[mllp]\nmax_connections = 0\n", "mllp.max_connections"),
        ("[hl7]\nmax_repetitions = 0\n", "hl7.max_repetitions"),
        ("[http]\nrequest_timeout = 0\n", "http.request_timeout"),
        ("[mpi]\nenterprise_oid = 'not-an-oid'\n", "mpi.enterprise_oid"),
        ("[[domains]]\nnamespace = 'A'\noid = '1.2.x'\n", "domains.0.oid"),
        ("[[domains]]\nnamespace = 'A'\n[[domains]]\nnamespace = 'A'\n", "configured twice"),
        ("[[domains]]\nnamespace = 'A'\nsauces = []\n", "domains.0.sauces: unknown key"),
        ("[matching]\nplaceholder_names = ['BEBE', ' - ']\n", "matching.placeholder_names"),
        ("[matching]\nplaceholder_names = []\n", "matching.placeholder_names"),
    ],
)
def test_bad_configuration_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text))
    assert named in str(caught.value)


def test_bad_environment_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_CONFIG", raising=False)
    monkeypatch.setenv("IDENTITY_HTTP__PORT", "not-a-port")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "http.port" in str(caught.value)


def test_missing_or_invalid_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(_write(tmp_path, "[http\nport = 1"))


def test_demo_configuration_is_valid() -> None:
    demo = Path(__file__).parents[2] / "identity" / "demo" / "demo.toml"
    settings = load_settings(demo)
    assert {d.namespace for d in settings.domains} >= {"HOSPA", "HOSPB", "NATIONAL"}
