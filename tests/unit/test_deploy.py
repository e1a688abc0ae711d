"""The container image and the Kubernetes sidecar manifests keep their promises."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
PODMONITOR = K8S / "components" / "podmonitor"
CONTAINERFILE = ROOT / "Containerfile"
PORT = 18464
SIDECAR = "kanban-watchers"
PASSWORD_FILE = "metrics-password"


def load_yaml(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def load_docs() -> list[dict[str, Any]]:
    """Every manifest under deploy/kubernetes, the optional components' included."""
    docs = []
    for path in sorted(K8S.rglob("*.y*ml")):
        docs.extend(load_yaml(path))
    return docs


DOCS = load_docs()


def kind(name: str) -> list[dict[str, Any]]:
    return [d for d in DOCS if d.get("kind") == name]


def pod_spec() -> dict[str, Any]:
    (deployment,) = kind("Deployment")
    return deployment["spec"]["template"]["spec"]


def sidecar() -> dict[str, Any]:
    (c,) = [c for c in pod_spec().get("initContainers", []) if c["name"] == SIDECAR]
    return c


def hermes() -> dict[str, Any]:
    (c,) = [c for c in pod_spec()["containers"] if c["name"] == "hermes"]
    return c


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def mount_of(container: dict[str, Any], volume: str) -> str:
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return path


def volume(name: str) -> dict[str, Any]:
    (v,) = [v for v in pod_spec()["volumes"] if v["name"] == name]
    return v


def watchers_toml() -> dict[str, Any]:
    (cm,) = kind("ConfigMap")
    return tomllib.loads(cm["data"]["kanban-watchers.toml"])


# -- the pod -----------------------------------------------------------------------


def test_the_daemon_runs_as_a_native_sidecar():
    """kanban-watchers is an initContainers entry with restartPolicy Always."""
    assert sidecar()["restartPolicy"] == "Always"
    assert SIDECAR not in [c["name"] for c in pod_spec()["containers"]]


def test_hermes_is_the_main_container():
    """Hermes runs its Kanban dispatcher as the pod's main container."""
    c = hermes()
    assert c["image"].startswith("ghcr.io/nousresearch/hermes-agent:")
    assert c["command"][:3] == ["hermes", "kanban", "daemon"]


def test_the_pod_shares_one_process_namespace():
    """Without it every worker PID looks gone and the guard holds every reap."""
    assert pod_spec()["shareProcessNamespace"] is True


def test_both_containers_mount_the_same_board_volume_where_hermes_home_points():
    """Hermes and the sidecar see one board at one path, named by HERMES_(KANBAN_)HOME."""
    board = "hermes-home"
    assert "persistentVolumeClaim" in volume(board) or "emptyDir" in volume(board)
    for c in (hermes(), sidecar()):
        path = mount_of(c, board)
        env = env_of(c)
        assert env["HERMES_HOME"] == path
        assert env["HERMES_KANBAN_HOME"] == path
    assert mount_of(hermes(), board) == mount_of(sidecar(), board)


def test_the_board_exists_before_the_sidecar_starts():
    """A plain init container before the sidecar creates the board (idempotently)."""
    inits = pod_spec()["initContainers"]
    names = [c["name"] for c in inits]
    first = inits[0]
    assert names.index(first["name"]) < names.index(SIDECAR)
    assert "restartPolicy" not in first
    assert first["command"] == ["hermes", "kanban", "init"]
    assert mount_of(first, "hermes-home") == mount_of(sidecar(), "hermes-home")


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe"])
def test_the_sidecar_is_probed_on_healthz(probe: str):
    """Startup and liveness probes ask /healthz on the metrics port."""
    get = sidecar()[probe]["httpGet"]
    assert get["path"] == "/healthz"
    assert get["port"] == PORT


def test_the_sidecar_has_no_readiness_probe():
    """A sidecar's readiness would gate the pod's; the daemon serves no traffic."""
    assert "readinessProbe" not in sidecar()


def test_the_sidecar_exposes_the_metrics_port_and_listens_beyond_loopback():
    """Port 18464 is declared, and both the env and the TOML listen on 0.0.0.0:18464."""
    ports = sidecar()["ports"]
    assert {"name": "metrics", "containerPort": PORT, "protocol": "TCP"} in ports
    assert env_of(sidecar())["WATCHERS_HTTP__LISTEN"] == f"0.0.0.0:{PORT}"
    assert watchers_toml()["http"]["listen"] == f"0.0.0.0:{PORT}"


def effective_security(container: dict[str, Any]) -> dict[str, Any]:
    return {**pod_spec().get("securityContext", {}), **container.get("securityContext", {})}


def all_containers() -> list[dict[str, Any]]:
    return [*pod_spec().get("initContainers", []), *pod_spec()["containers"]]


@pytest.mark.parametrize("name", ["kanban-init", SIDECAR, "hermes"])
def test_every_container_runs_restricted(name: str):
    """Non-root numeric uid, read-only root, no escalation, no capabilities, seccomp."""
    (c,) = [c for c in all_containers() if c["name"] == name]
    sc = effective_security(c)
    assert sc["runAsNonRoot"] is True
    assert isinstance(sc["runAsUser"], int)
    assert sc["runAsUser"] > 0
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert sc["seccompProfile"]["type"] == "RuntimeDefault"


def test_the_sidecar_runs_as_the_agents_uid():
    """Same uid as Hermes and its workers, so their /proc entries can be read."""
    assert effective_security(sidecar())["runAsUser"] == effective_security(hermes())["runAsUser"]
    assert effective_security(sidecar())["runAsUser"] == pod_spec()["securityContext"]["runAsUser"]


def test_the_sidecar_writes_only_to_volumes():
    """/tmp is an emptyDir; the config and the credentials are mounted read-only."""
    mounts = {m["mountPath"]: m for m in sidecar()["volumeMounts"]}
    assert "emptyDir" in volume(mounts["/tmp"]["name"])
    assert mounts["/etc/kanban-watchers"]["readOnly"] is True
    credentials = env_of(sidecar())["CREDENTIALS_DIRECTORY"]
    assert mounts[credentials]["readOnly"] is True


def test_the_config_map_holds_a_valid_configuration(tmp_path: Path, monkeypatch):
    """The ConfigMap's TOML loads as the daemon loads it, with the mounted password."""
    from watchers.settings import load_settings

    config = tmp_path / "kanban-watchers.toml"
    (cm,) = kind("ConfigMap")
    config.write_text(cm["data"]["kanban-watchers.toml"], encoding="utf-8")
    (tmp_path / PASSWORD_FILE).write_text("s3cret\n", encoding="utf-8")
    for name in [n for n in os.environ if n.upper().startswith("WATCHERS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    settings = load_settings(config)
    assert settings.http.enabled
    assert settings.http.listen == f"0.0.0.0:{PORT}"
    assert settings.http.basic_auth_user
    assert settings.http.basic_auth_password is not None
    assert settings.http.basic_auth_password.get_secret_value() == "s3cret"


def test_the_sidecar_mounts_the_config_map_at_its_config_path():
    """The --config path is the ConfigMap's file."""
    args = sidecar()["args"]
    config = args[args.index("--config") + 1]
    mount = mount_of(sidecar(), "watchers-config")
    assert config == f"{mount}/kanban-watchers.toml"
    (cm,) = kind("ConfigMap")
    assert volume("watchers-config")["configMap"]["name"] == cm["metadata"]["name"]


def test_the_metrics_password_is_a_secret_file_in_the_credentials_directory():
    """CREDENTIALS_DIRECTORY names the Secret's mount, which holds metrics-password."""
    credentials = env_of(sidecar())["CREDENTIALS_DIRECTORY"]
    (mount,) = [m for m in sidecar()["volumeMounts"] if m["mountPath"] == credentials]
    secret = volume(mount["name"])["secret"]
    assert secret["secretName"]
    assert [i["path"] for i in secret["items"]] == [PASSWORD_FILE]
    assert secret["defaultMode"] & 0o007 == 0  # not world-readable


def test_no_secret_value_reaches_the_environment_or_the_config_map():
    """No env var carries a password or a secretKeyRef; the TOML has no password."""
    for c in all_containers():
        for e in c.get("env", []):
            assert "PASSWORD" not in e["name"].upper()
            assert "secretKeyRef" not in e.get("valueFrom", {})
        assert not c.get("envFrom")
    assert "basic_auth_password" not in watchers_toml().get("http", {})
    (cm,) = kind("ConfigMap")
    assert "password =" not in cm["data"]["kanban-watchers.toml"]


def test_the_example_secret_is_not_applied():
    """The Secret is created by the operator; kustomize never applies the example."""
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    assert "secret.example.yaml" not in kustomization["resources"]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file()
    assert "Secret" not in {d["kind"] for d in build(K8S)}


def test_shutdown_fits_in_the_grace_period():
    """The daemon's shutdown timeout is well inside terminationGracePeriodSeconds."""
    grace = pod_spec()["terminationGracePeriodSeconds"]
    timeout = watchers_toml()["daemon"]["shutdown_timeout_seconds"]
    assert grace <= 30
    assert timeout <= grace / 2


def test_prometheus_scrapes_the_sidecar_with_basic_auth():
    """A PodMonitor selects the pod's metrics port with basic auth from the Secret."""
    (monitor,) = kind("PodMonitor")
    labels = hermes_pod_labels()
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["path"] == "/metrics"
    secret = volume("metrics-credentials")["secret"]["secretName"]
    assert endpoint["basicAuth"]["password"] == {"name": secret, "key": PASSWORD_FILE}


def hermes_pod_labels() -> dict[str, str]:
    (deployment,) = kind("Deployment")
    return deployment["spec"]["template"]["metadata"]["labels"]


# -- kustomize: the base, the optional PodMonitor, the images ----------------------------


def build(root: Path) -> list[dict[str, Any]]:
    """What `kustomize build root` emits, resource-wise: its resources (files and
    directories) and its components, recursively; every path must exist."""
    (kustomization,) = load_yaml(root / "kustomization.yaml")
    docs = []
    for entry in [*kustomization.get("resources", []), *kustomization.get("components", [])]:
        path = (root / entry).resolve()
        assert path.exists(), f"{root}: {entry} does not exist"
        docs.extend(build(path) if path.is_dir() else load_yaml(path))
    return docs


def image_name(image: str) -> tuple[str, str]:
    """(name, tag) of an image reference without a digest."""
    name, _, tag = image.rpartition(":")
    return (name, tag) if name and "/" not in tag else (image, "")


def test_the_base_applies_without_the_prometheus_operator():
    """`kubectl apply -k deploy/kubernetes` creates only core kinds: no PodMonitor."""
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    assert kustomization["kind"] == "Kustomization"
    assert not [r for r in kustomization["resources"] if "podmonitor" in r.lower()]
    assert not kustomization.get("components")
    assert not (K8S / "podmonitor.yaml").exists()
    built = build(K8S)
    assert {d["kind"] for d in built} == {"ConfigMap", "PersistentVolumeClaim", "Deployment"}
    assert not [d for d in built if "monitoring.coreos.com" in d["apiVersion"]]


def test_the_podmonitor_is_an_optional_component():
    """components/podmonitor is a kustomize Component holding the one PodMonitor."""
    (component,) = load_yaml(PODMONITOR / "kustomization.yaml")
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    assert component["resources"] == ["podmonitor.yaml"]
    (monitor,) = build(PODMONITOR)
    assert monitor["kind"] == "PodMonitor"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"


def test_kustomize_images_name_the_deployments_images():
    """`images:` covers every container's image by its name, at the tag it ships with."""
    (kustomization,) = load_yaml(K8S / "kustomization.yaml")
    images = {i["name"]: i for i in kustomization["images"]}
    used = {image_name(c["image"]) for c in all_containers()}
    assert {name for name, _ in used} == set(images)
    for name, tag in used:
        assert images[name]["newName"]
        assert images[name]["newTag"] == tag, name
    assert image_name(sidecar()["image"])[0] == "ghcr.io/example/kanban-watchers"


def kustomize() -> list[str]:
    if path := shutil.which("kustomize"):
        return [path, "build"]
    if path := shutil.which("kubectl"):
        return [path, "kustomize"]
    pytest.skip("neither kustomize nor kubectl is installed (the YAML checks above still ran)")


def kustomized(directory: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [*kustomize(), str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def test_kustomize_builds_the_base_and_an_overlay_with_the_podmonitor(tmp_path: Path):
    """The real kustomize: the base alone, then an overlay (outside the base, as the
    comment in kustomization.yaml shows) adding the component and another image tag."""
    base = kustomized(K8S)
    assert sorted(d["kind"] for d in base) == ["ConfigMap", "Deployment", "PersistentVolumeClaim"]
    (deployment,) = [d for d in base if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (watchers,) = [c for c in spec["initContainers"] if c["name"] == SIDECAR]
    assert watchers["image"] == sidecar()["image"]

    overlay = tmp_path / "monitoring"
    overlay.mkdir()
    up = os.path.relpath(K8S, overlay)
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [up],
                "components": [os.path.relpath(PODMONITOR, overlay)],
                "images": [
                    {
                        "name": "ghcr.io/example/kanban-watchers",
                        "newName": "registry.example.com/kanban-watchers",
                        "newTag": "9.9.9",
                    }
                ],
            }
        ),
        encoding="utf-8",
    )
    built = kustomized(overlay)
    assert sorted(d["kind"] for d in built) == [
        "ConfigMap",
        "Deployment",
        "PersistentVolumeClaim",
        "PodMonitor",
    ]
    (deployment,) = [d for d in built if d["kind"] == "Deployment"]
    spec = deployment["spec"]["template"]["spec"]
    (watchers,) = [c for c in spec["initContainers"] if c["name"] == SIDECAR]
    assert watchers["image"] == "registry.example.com/kanban-watchers:9.9.9"
    (hermes_built,) = spec["containers"]
    assert hermes_built["image"] == hermes()["image"]


def test_a_plain_prometheus_job_is_provided_too():
    """prometheus-scrape.yml has a kanban-watchers job with basic_auth password_file."""
    snippet = yaml.safe_load((K8S / "prometheus-scrape.yml").read_text(encoding="utf-8"))
    (job,) = [j for j in snippet["scrape_configs"] if j["job_name"] == "kanban-watchers"]
    assert job["metrics_path"] == "/metrics"
    assert job["basic_auth"]["password_file"].endswith(PASSWORD_FILE)
    assert "password" not in job["basic_auth"]
    keeps = {r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"}
    assert "metrics" in keeps
    (label,) = [k for k, v in hermes_pod_labels().items() if v == "true"]
    assert f"__meta_kubernetes_pod_label_{re.sub(r'[^a-zA-Z0-9_]', '_', label)}" in {
        s for r in job["relabel_configs"] for s in r.get("source_labels", [])
    }


# -- the Containerfile ---------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    text = CONTAINERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_the_image_is_built_in_stages_on_slim_python_311():
    """At least two stages, every one on python:3.11-slim."""
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) >= 2
    for args in froms:
        assert args.split()[0] == "python:3.11-slim"


def test_the_final_stage_copies_the_build_from_the_first():
    """The runtime stage takes the built venv, not the sources."""
    copies = [args for word, args in final_stage() if word == "COPY"]
    assert any(args.startswith("--from=") for args in copies)
    assert not any(re.search(r"(^|\s)watchers/?(\s|$)", args) for args in copies)


def test_the_image_runs_as_a_numeric_non_root_user():
    """USER is a numeric uid (and gid), not root."""
    users = [args for word, args in final_stage() if word == "USER"]
    assert users
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert not gid or gid.isdigit()


def test_the_entrypoint_is_exec_form():
    """ENTRYPOINT and CMD are JSON arrays, so the daemon itself receives SIGTERM."""
    (entry,) = [args for word, args in final_stage() if word == "ENTRYPOINT"]
    assert json.loads(entry) == ["watchers"]
    (cmd,) = [args for word, args in final_stage() if word == "CMD"]
    assert json.loads(cmd)[0] == "run"


def test_nothing_is_installed_at_run_time():
    """No pip install in the final stage, and none at all once USER is set."""
    steps = final_stage()
    runs = [args for word, args in steps if word == "RUN"]
    assert not any(re.search(r"\bpip\d*\s+install\b", args) for args in runs)
    user_at = max(i for i, (word, _) in enumerate(steps) if word == "USER")
    assert not [word for word, _ in steps[user_at:] if word == "RUN"]


def test_the_image_never_writes_bytecode_and_exposes_the_metrics_port():
    """PYTHONDONTWRITEBYTECODE=1 (read-only root) and EXPOSE 18464."""
    envs = " ".join(args for word, args in final_stage() if word == "ENV")
    assert re.search(r"\bPYTHONDONTWRITEBYTECODE=1\b", envs)
    assert re.search(rf"\bWATCHERS_HTTP__LISTEN=0\.0\.0\.0:{PORT}\b", envs)
    exposed = [args for word, args in final_stage() if word == "EXPOSE"]
    assert str(PORT) in " ".join(exposed).split()


def test_the_image_default_command_names_a_file_it_ships():
    """CMD's --config is the path the image copies the documented TOML to."""
    (cmd,) = [args for word, args in final_stage() if word == "CMD"]
    argv = json.loads(cmd)
    config = argv[argv.index("--config") + 1]
    copies = [args.split() for word, args in final_stage() if word == "COPY"]
    assert ["config/kanban-watchers.toml", config] in copies
