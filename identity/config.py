"""One Settings model for the whole service.

Sources, highest priority first: keyword arguments (tests), ``IDENTITY_<SECTION>__<KEY>``
environment variables, the TOML file named by ``--config`` or ``IDENTITY_CONFIG``, defaults.
The key names are a public interface (README "Configuration"): keep them stable.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from identity.errors import ConfigError
from identity.hl7v2.mllp import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT
from identity.hl7v2.tokenizer import DEFAULT_MAX_REPETITIONS, DEFAULT_MAX_SEGMENTS
from matching.blocking import (
    DEFAULT_CANDIDATE_MARGIN,
    DEFAULT_MAX_BLOCK,
    DEFAULT_MAX_CANDIDATES,
    DEFAULT_MIN_KEYS,
    DEFAULT_RARE_BLOCK,
)
from matching.decision import PLACEHOLDER_NAMES
from matching.normalize import fold

_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseSettings(_Section):
    url: str | None = None
    """postgresql:// URL. Unset: an embedded PostgreSQL whose data lives under data_dir."""
    min_connections: int = Field(2, ge=1)
    max_connections: int = Field(20, ge=1)
    command_timeout: float = Field(30.0, gt=0)
    replica_url: str | None = None
    """postgresql:// URL of a streaming replica of ``url``: the doors' queries (PIX ITI-9 and
    ITI-83, PDQ ITI-21 and ITI-78, FHIR Patient read, $match) are served from it, except a
    caller's reads that must see its own change the replica has not replayed yet
    (docs/operations.md, *Read replicas*). Unset: every read goes to the primary."""
    replica_max_lag: float = Field(5.0, gt=0)
    """Seconds: a replica further behind than this serves no reads (the primary does)."""
    replica_max_connections: int | None = Field(None, ge=1)
    """The replica pool's size (default: max_connections)."""


def _readable(value: Path | None) -> Path | None:
    """A PEM file the service can read (checked at load, so a typo fails at start-up)."""
    if value is None:
        return None
    try:
        with open(value, "rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
    return value


class TlsSettings(_Section):
    """``[http.tls]`` / ``[mllp.tls]``: the listener speaks TLS (identity/tls.py, 1.2 floor)."""

    certificate: Path
    """PEM: the server certificate (then any intermediates)."""
    key: Path
    """PEM: its private key (unencrypted)."""
    ca: Path | None = None
    """PEM bundle of the CAs whose client certificates are accepted."""
    client_certificates: Literal["none", "optional", "required"] = "none"

    _files = field_validator("certificate", "key", "ca")(_readable)

    @model_validator(mode="after")
    def _ca_for_clients(self) -> TlsSettings:
        if self.client_certificates != "none" and self.ca is None:
            raise ValueError(
                f"ca is required when client_certificates = {self.client_certificates!r}"
            )
        return self


class HttpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls: TlsSettings | None = None
    """Absent: plain HTTP."""
    max_body_bytes: int = Field(8 << 20, ge=1024)
    """A request body larger than this is refused with 413 (an OperationOutcome under /fhir)
    before it is read whole."""
    request_timeout: float = Field(60.0, gt=0)
    """Seconds a request may take, reading its body included, up to the moment it hands a
    change to the core; longer: 503 (an OperationOutcome with code ``timeout`` under /fhir;
    /healthz reports the database unavailable), nothing changed. A change handed to the core
    is not cut short (each statement is bounded by [database] command_timeout), so that a
    change that committed is never reported as failed (docs/operations.md, *Limits*)."""
    idle_timeout: float = Field(75.0, gt=0)
    """Seconds a connection may stay open without a whole request (idle between requests, or
    sending its request line and headers slowly) before it is closed, without a response."""
    metrics: bool = True
    """Serve ``GET /metrics`` (Prometheus text format; no token, like /healthz and /readyz).
    False: /metrics answers 404 (docs/operations.md, *Metrics and health*)."""
    drain_seconds: float = Field(0.0, ge=0, le=300)
    """Seconds between SIGTERM and closing the listeners, during which ``/readyz`` answers 503
    (draining) while both doors go on serving: time for a load balancer or Kubernetes to take
    the instance out of rotation before it stops accepting."""


class MllpClientSettings(_Section):
    """``[[mllp.clients]]``: a sender known by its TLS client certificate, and the MSH-3 /
    MSH-4 values it may send as. When any are configured, every MLLP message must come over a
    connection whose certificate matches one of them (docs/security.md)."""

    subject: str | None = None
    """The certificate's subject, as an RFC 4514 string (``CN=adt.hospa.example,O=Hospital
    A``); attributes compare regardless of order ..."""
    san: str | None = None
    """... or one of its subjectAltName values (DNS name, URI or IP address)."""
    applications: list[str] = Field(min_length=1)
    """MSH-3 namespace ids it may send as."""
    facilities: list[str] = Field(default_factory=list)
    """MSH-4 namespace ids it may send as; empty = any."""

    @model_validator(mode="after")
    def _one_name(self) -> MllpClientSettings:
        if (self.subject is None) == (self.san is None):
            raise ValueError("set exactly one of subject and san")
        return self


class MllpSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)
    max_message_bytes: int = Field(1 << 20, ge=1024)
    """A larger frame closes its connection, unanswered (there is no whole message to answer)."""
    idle_timeout: float = Field(300.0, gt=0)
    """Seconds without a byte from the sender before its connection is closed."""
    max_connections: int = Field(DEFAULT_MAX_CONNECTIONS, ge=1)
    """Connections open at once; one more is closed as soon as it is accepted (WARNING
    ``mllp.connection_refused``). Per service process: ``workers = N`` allows N times this."""
    max_connections_per_client: int = Field(DEFAULT_MAX_CONNECTIONS_PER_CLIENT, ge=1)
    """Connections open at once from one IP address; likewise per service process."""
    tls: TlsSettings | None = None
    """Absent: plain TCP."""
    clients: list[MllpClientSettings] = Field(default_factory=list)
    """Empty: MSH-3 is trusted as sent (a trusted network segment only)."""

    @model_validator(mode="after")
    def _clients_need_certificates(self) -> MllpSettings:
        if self.clients and (self.tls is None or self.tls.client_certificates == "none"):
            raise ValueError("[[mllp.clients]] needs [mllp.tls] with client_certificates = "
                             "'required' (or 'optional')")
        return self


class MpiSettings(_Section):
    enterprise_namespace: str = "MPI"
    enterprise_oid: str = "1.3.6.1.4.1.21367.2026.1.1"
    auto_register_domains: bool = False

    @field_validator("enterprise_oid")
    @classmethod
    def _oid(cls, value: str) -> str:
        if not _OID.match(value):
            raise ValueError(f"not an ISO OID: {value!r}")
        return value


class DomainSettings(_Section):
    namespace: str = Field(min_length=1)
    oid: str | None = None
    sources: list[str] = Field(default_factory=list)
    """MSH-3 sending applications (or FHIR client ids) allowed to assign here; empty = any."""
    identifies_person: bool = False

    @field_validator("oid")
    @classmethod
    def _oid(cls, value: str | None) -> str | None:
        if value is not None and not _OID.match(value):
            raise ValueError(f"not an ISO OID: {value!r}")
        return value


class MatchingSettings(_Section):
    """Thresholds are match probabilities: at or above ``auto_link`` a record links
    automatically (unless a hard rule forbids it), at or above ``review`` the pair goes to a
    steward, below it is no match."""

    model: Path | None = None
    """Model JSON written by `identity train`; unset: the model shipped in matching/data."""
    auto_link: float = Field(0.999, gt=0, le=1)
    """Set here (file or IDENTITY_MATCHING__AUTO_LINK), it wins over a calibrated threshold;
    unset, 0.999 until `identity calibrate` proposes one (``false_link_budget``)."""
    review: float = Field(0.5, gt=0, le=1)
    """Set here (file or IDENTITY_MATCHING__REVIEW), it wins over a calibrated threshold;
    unset, 0.5 until `identity calibrate` proposes a higher one (``review_budget``)."""
    calibrate: Literal["off", "suggest", "auto"] = "off"
    """Calibration on a schedule (docs/matching.md): ``suggest`` runs `identity calibrate`'s
    dry run and stores the proposal for an operator; ``auto`` also applies it when the dry run
    passes the guards (no automatic link would stop holding; the new links expect at most
    ``false_link_budget``, else 10, false ones per 10,000)."""
    calibrate_growth: float = Field(2.0, gt=1)
    """A scheduled calibration runs when the index holds this many times the records of the
    last one (the first at 1,000 records) ..."""
    calibrate_interval: float = Field(30.0, gt=0)
    """... or this many days after the last one."""
    false_link_budget: float | None = Field(10.0, ge=0)
    """Expected false automatic links per 10,000 links that `identity calibrate` may spend: it
    proposes the lowest auto-link threshold (not above ``auto_link``, not below
    ``auto_link_floor``) within it, from the proposed model's posteriors, and reports the
    review load it implies."""
    auto_link_floor: float = Field(0.98, gt=0, le=1)
    """The least probability any one automatic link may have under a proposed threshold: the
    budget is an average over every link, most of them near-certain, and alone it can set the
    threshold where single pairs have a 10-25 % chance of being two people."""
    review_budget: float | None = Field(20.0, ge=0)
    """Open review items per 1,000 active records that stewards can work through: when the
    proposed model would leave more, `identity calibrate` proposes the lowest review
    threshold (not below ``review``, not above auto-link) that keeps the queue within it, the
    most probable pairs kept, and reports the pairs it leaves out. None: the queue is not
    bounded."""
    max_candidates: int = Field(DEFAULT_MAX_CANDIDATES, ge=1, le=5000)
    """Candidates scored per record at most: the best-ranked by blocking keys shared (logged at
    DEBUG when the cap cuts). At 1M records a true duplicate ranks within the first 50 for 99.8%
    of records, against 99.9% within 200 (`benchmarks/candidate_recall.py`)."""
    candidate_min_keys: int = Field(DEFAULT_MIN_KEYS, ge=0)
    """A candidate sharing no identifier with the record is scored only when it shares at least
    this many demographic blocking keys (fewer when the record has fewer usable ones: sparse
    records still find candidates) ..."""
    candidate_rare_block: int = Field(DEFAULT_RARE_BLOCK, ge=0)
    """... but one key is enough when it is rare: its block holds at most this many records (0:
    never) ..."""
    candidate_margin: int = Field(DEFAULT_CANDIDATE_MARGIN, ge=0)
    """... and no fewer than the best candidate less this margin (a large number: no margin).
    Together they keep the number of candidates scored per record about the same at 1M records
    as at 10k; the evidence (`benchmarks/candidate_recall.py --decisions`) is in the README."""
    max_block: int = Field(DEFAULT_MAX_BLOCK, ge=2)
    """Blocking keys shared by more records than this are skipped as uninformative."""
    term_frequencies: bool = True
    """Adjust name agreement by how common the name is in the index (computed at start-up)."""
    placeholder_names: list[str] = Field(
        default_factory=lambda: sorted(PLACEHOLDER_NAMES), min_length=1)
    """Names given to a newborn (or an unidentified patient) before the real one is known, as
    a site's registration desk writes them (compared folded to ASCII, case and spaces
    ignored, a trailing twin letter or number dropped): a record so named, or with no name,
    is never linked automatically on demographics (hard rule ``newborn_placeholder``)."""

    @field_validator("placeholder_names")
    @classmethod
    def _folded(cls, names: list[str]) -> list[str]:
        folded = [" ".join(fold(name).split()) for name in names]
        if not all(folded):
            raise ValueError("a placeholder name must not be empty")
        return folded

    @model_validator(mode="after")
    def _ordered(self) -> MatchingSettings:
        if self.review > self.auto_link:
            raise ValueError("review must not exceed auto_link")
        return self


class Hl7Settings(_Section):
    application: str = "IDENTITY"
    """MSH-3 of the messages this service sends (ACK, RSP, ITI-10 notifications)."""
    facility: str = "MPI"
    """MSH-4 of the messages this service sends."""
    max_segments: int = Field(DEFAULT_MAX_SEGMENTS, ge=1)
    """An inbound message with more segments is answered AR with ERR code 207 at the first
    segment over the cap, and nothing in it is applied."""
    max_repetitions: int = Field(DEFAULT_MAX_REPETITIONS, ge=1)
    """Likewise for a field with more repetitions (ERR-2 names the field and repetition)."""
    pid19_domain: str | None = None
    """Namespace of the [[domains]] entry that PID-19 (SSN number) identifiers go to; unset:
    the domain whose OID is the US SSA's, 2.16.840.1.113883.4.1 (PID-19 is skipped when no
    such domain is configured)."""


class FhirSettings(_Section):
    client_id_header: str = "X-Client-Id"
    """Until OAuth2 lands, the request header naming the FHIR client (its source identity)."""
    default_page_size: int = Field(20, ge=1)
    max_page_size: int = Field(200, ge=1)
    base_url: str | None = None
    """Public base URL of the FHIR API (for links); unset: derived from each request."""


class NotifySettings(_Section):
    """A PIX Consumer that receives ITI-10 ADT^A31 update notifications."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    host: str
    port: int = Field(ge=1, le=65535)
    domains: list[str] = Field(default_factory=list)
    """Namespaces the consumer subscribes to; empty = every domain."""
    receiving_application: str = ""
    receiving_facility: str = ""
    tls: bool = False
    """Connect over TLS (identity/tls.py: 1.2 floor, the consumer's certificate verified)."""
    ca: Path | None = None
    """PEM bundle to verify the consumer's certificate with; unset: the system's CAs."""
    certificate: Path | None = None
    """PEM: our client certificate, for consumers that require mutual TLS ..."""
    key: Path | None = None
    """... and its private key."""

    _files = field_validator("ca", "certificate", "key")(_readable)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        """``ca_file``, ``cert_file``, ``key_file``: the names before ``[http.tls]`` existed."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for old, new in (("ca_file", "ca"), ("cert_file", "certificate"), ("key_file", "key")):
            if old in data:
                if data.get(new) is not None:
                    raise ValueError(f"{old} and {new} are the same key: set only {new}")
                data[new] = data.pop(old)
        return data

    @model_validator(mode="after")
    def _tls_files(self) -> NotifySettings:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("certificate and key go together")
        if not self.tls and (self.ca or self.certificate):
            raise ValueError("ca, certificate and key are used only with tls = true")
        return self


class AuthSettings(_Section):
    """``[auth]``: who may call the HTTP door (identity/auth.py, docs/security.md)."""

    mode: Literal["none", "jwt"] = "none"
    """``jwt``: every request but /fhir/metadata and the probes (/healthz, /readyz, /metrics)
    needs an OAuth2 bearer JWT. ``none``: the client is the ``[fhir] client_id_header``
    header as sent (demos and tests; refused on a non-loopback HTTP address unless
    ``allow_insecure``)."""
    issuer: str | None = None
    """The ``iss`` the tokens must carry."""
    audience: str | None = None
    """The ``aud`` they must carry (this service's URL, usually)."""
    jwks_file: Path | None = None
    """The authorisation server's public keys (a JWKS document) ..."""
    jwks_url: str | None = None
    """... or where to fetch them (at start-up, hourly, and for an unknown key id)."""
    leeway: float = Field(60.0, ge=0, le=600)
    """Clock skew allowed on ``exp`` and ``nbf``, seconds."""
    realm: str = "identity"
    """The realm of the WWW-Authenticate challenge."""
    allow_insecure: bool = False
    """Run ``mode = "none"`` on a non-loopback HTTP address anyway."""

    _files = field_validator("jwks_file")(_readable)

    @model_validator(mode="after")
    def _jwt_complete(self) -> AuthSettings:
        if self.mode == "jwt":
            missing = [k for k in ("issuer", "audience") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"mode = 'jwt' needs {' and '.join(missing)}")
            if (self.jwks_file is None) == (self.jwks_url is None):
                raise ValueError("mode = 'jwt' needs exactly one of jwks_file and jwks_url")
        return self


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AuditSyslogSettings(_Section):
    """``[audit.syslog]``: the Audit Record Repository that audit records are sent to (IHE
    ITI-20, RFC 5424): ``tls://host[:6514]`` (RFC 5425) or ``udp://host[:514]`` (RFC 5426)."""

    url: str
    ca: Path | None = None
    """PEM bundle to verify the collector's certificate with (tls://); unset: the system's CAs."""
    certificate: Path | None = None
    """PEM: our client certificate, for a collector that requires mutual TLS ..."""
    key: Path | None = None
    """... and its private key."""
    bom: bool = False
    """Start each MSG with the UTF-8 BOM of RFC 5424 (ITI TF-2 3.20.4.1.2 discourages it)."""

    _files = field_validator("ca", "certificate", "key")(_readable)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("tls", "udp"):
            raise ValueError("must be tls://host[:port] (RFC 5425) or udp://host[:port] (RFC 5426)")
        try:
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}: {exc}") from None
        if not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError(f"expected scheme://host[:port], got {value!r}")
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> AuditSyslogSettings:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("certificate and key go together")
        if not self.url.startswith("tls:") and (self.ca or self.certificate):
            raise ValueError("ca, certificate and key are used only with a tls:// url")
        return self


class AuditSettings(_Section):
    """``[audit]``: ATNA audit records (IHE ITI-20; docs/audit.md)."""

    source_id: str = Field("identity", min_length=1)
    """AuditSourceID (DICOM) / AuditEvent.source.observer: this service in the audit log."""
    enterprise_site: str | None = None
    """AuditEnterpriseSiteID / AuditEvent.source.site: the organisation that runs it."""
    syslog: AuditSyslogSettings | None = None
    """Absent: records are kept in the database (GET /fhir/AuditEvent) and nothing is sent."""


class MaintenanceSettings(_Section):
    """``[maintenance]``: what the service does to its own database (docs/operations.md,
    *Self-maintenance*). Each task runs in one worker at a time (an advisory lock)."""

    enabled: bool = True
    """False: none of the tasks below run (an operator's own jobs do them)."""
    analyze_interval: float = Field(30.0, ge=1)
    """Seconds between two checks of the tables' statistics (a check is one catalog query;
    an index filled from empty grows fastest in its first minutes)."""
    analyze_fraction: float = Field(0.1, gt=0, le=10)
    """A table is ANALYZEd when the rows inserted, updated or deleted since its last ANALYZE
    (by anyone: this task, autovacuum, an operator) exceed this fraction of its rows then ..."""
    analyze_min_rows: int = Field(500, ge=0)
    """... plus this many (so that a small table is not analysed at every check)."""
    vacuum: Literal["auto", "always", "never"] = "auto"
    """VACUUM (never FULL) a table whose dead rows exceed ``vacuum_fraction`` of its rows:
    ``auto`` only when the server's autovacuum is off."""
    vacuum_fraction: float = Field(0.2, gt=0, le=10)
    retention_interval: float = Field(3600.0, ge=1)
    """Seconds between two retention runs (the deletions and the archiving below)."""
    batch_rows: int = Field(10_000, ge=100, le=1_000_000)
    """Rows deleted (or archived) per statement, each its own transaction: short locks."""
    outbox_delivered_days: float = Field(7.0, ge=0)
    """Delivered outbox rows older than this are deleted (0: kept)."""
    outbox_unconsumed_days: float = Field(7.0, ge=0)
    """Undelivered outbox rows of a topic no worker of this configuration delivers (a
    ``[[notify]]`` consumer removed, ``[audit.syslog]`` unset) are deleted at this age (0:
    kept). Every instance sharing the database must have the same consumers."""
    write_unconsumed_topics: bool = False
    """Write the rows of ``identity.changed`` and ``record.updated``, topics no worker
    delivers (an external reader of the outbox table); false: only consumers' topics are
    written."""
    processed_message_days: float = Field(30.0, ge=0)
    """Stored replies (idempotency) older than this are deleted (0: kept): longer than any
    sender's retry window; a message re-sent after it is processed as a new one."""
    history_retention_days: float = Field(0.0, ge=0)
    """History rows older than this are moved to ``history_archive`` (0: never): they no
    longer show in the steward's views, and a command archived cannot be undone."""

    @model_validator(mode="after")
    def _at_least_a_day(self) -> MaintenanceSettings:
        for key in ("outbox_delivered_days", "outbox_unconsumed_days", "processed_message_days",
                    "history_retention_days"):
            value = getattr(self, key)
            if 0 < value < 1:
                raise ValueError(f"{key} must be 0 (keep) or at least 1 day")
        return self


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDENTITY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    data_dir: Path = Path("./identity-data")
    log_level: str = "INFO"
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    workers: int = Field(1, ge=1, le=64)
    """Service processes (`identity serve`): each serves HTTP and MLLP on the same ports, with
    its own event loop and database pool; more than one lets the service use more than one
    core (README, *Worker processes*)."""
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    mllp: MllpSettings = MllpSettings()
    mpi: MpiSettings = MpiSettings()
    domains: list[DomainSettings] = Field(default_factory=list)
    matching: MatchingSettings = MatchingSettings()
    hl7: Hl7Settings = Hl7Settings()
    fhir: FhirSettings = FhirSettings()
    notify: list[NotifySettings] = Field(default_factory=list)
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return level

    @model_validator(mode="after")
    def _unique_domains(self) -> Settings:
        seen: set[str] = set()
        for index, domain in enumerate(self.domains):
            for key in (domain.namespace, domain.oid):
                if key is None:
                    continue
                if key in seen:
                    raise ValueError(f"domains[{index}]: {key!r} is configured twice")
                seen.add(key)
        if self.mpi.enterprise_namespace in seen or self.mpi.enterprise_oid in seen:
            raise ValueError("a [[domains]] entry reuses the enterprise namespace or OID")
        if (self.auth.mode == "none" and not self.auth.allow_insecure
                and not is_loopback(self.http.host)):
            raise ValueError(
                f"[auth] mode = 'none' lets anyone on the network read and change the index "
                f"(http.host = {self.http.host!r}): set [auth] mode = 'jwt', bind HTTP to "
                f"127.0.0.1, or set [auth] allow_insecure = true"
            )
        names = [n.name for n in self.notify]
        if len(set(names)) != len(names):
            raise ValueError("[[notify]] names must be unique")
        pid19 = self.hl7.pid19_domain
        if pid19 is not None and pid19 not in {d.namespace for d in self.domains}:
            raise ValueError(
                f"hl7.pid19_domain: {pid19!r} is not the namespace of a [[domains]] entry"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # toml_file is set only on the per-file subclass that load_settings() makes.
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the TOML file (argument, else IDENTITY_CONFIG) and the environment.

    Raises ConfigError with a message that names the offending key.
    """
    if config_file is None:
        config_file = os.environ.get("IDENTITY_CONFIG") or None
    path = Path(config_file) if config_file is not None else None
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"configuration file not found: {path}")
        try:
            tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    settings_cls: type[Settings] = Settings
    if path is not None:
        config = SettingsConfigDict(**{**Settings.model_config, "toml_file": path})
        settings_cls = type("Settings", (Settings,), {"model_config": config})
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc


def _describe(exc: ValidationError, path: Path | None) -> str:
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        if error["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {error['msg']}")
    return "\n".join(lines)
