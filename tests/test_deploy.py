"""deploy/: the manifests parse and fit together, and every command they run is a real one.

Offline checks only: no image is built and no cluster is started here (see deploy/README.md).
"""

import re
import shlex
import tempfile
import tomllib
from pathlib import Path

import pytest
import typer
import yaml

from stream2dataset.cli import app
from stream2dataset.config import load_config, parse_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
YAMLS = sorted(DEPLOY.rglob("*.yaml"))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _pin(name: str) -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==(\S+)", dep)
        if m:
            return m.group(2)
    raise AssertionError(f"{name} is not pinned in pyproject.toml")


def _cluster() -> dict:
    (doc,) = _docs(KUBERAY / "raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    return doc


def _pod_specs(cluster: dict) -> dict[str, dict]:
    specs = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]}
    for group in cluster["spec"]["workerGroupSpecs"]:
        specs[group["groupName"]] = group["template"]["spec"]
    return specs


# ---------------------------------------------------------------- every YAML parses


def test_deploy_has_the_expected_files():
    for name in ["Dockerfile.cpu", "Dockerfile.cuda", "README.md", "cluster-aws.yaml", "kuberay/raycluster.yaml",
                 "kuberay/rayjob-train.yaml", "kuberay/storage.yaml"]:
        assert (DEPLOY / name).is_file(), name


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(DEPLOY)) for p in YAMLS])
def test_yaml_parses(path):
    docs = _docs(path)
    assert docs and all(isinstance(d, dict) for d in docs)


# ---------------------------------------------------------------- KubeRay objects


def test_raycluster_groups_and_autoscaling():
    cluster = _cluster()
    spec = cluster["spec"]
    assert spec["rayVersion"] == _pin("ray")
    assert spec["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-workers", "gpu-workers"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    assert groups["cpu-workers"]["minReplicas"] >= 1  # recorders are long-lived
    assert groups["gpu-workers"]["minReplicas"] == 0 and groups["gpu-workers"]["maxReplicas"] >= 1
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_gpu_group_requests_gpus_and_cpu_groups_do_not():
    specs = _pod_specs(_cluster())
    for name, pod in specs.items():
        (container,) = pod["containers"]
        res = container["resources"]
        gpus = {k: str(res.get(k, {}).get("nvidia.com/gpu", "0")) for k in ("requests", "limits")}
        if name == "gpu-workers":
            assert gpus["limits"] == "1" and gpus["requests"] == "1"
            assert "cuda" in container["image"]
        else:
            assert gpus == {"requests": "0", "limits": "0"}, name
            assert "cpu" in container["image"]


def test_storage_and_config_mounted_at_the_same_path_everywhere():
    pvc, configmap = _docs(KUBERAY / "storage.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and "ReadWriteMany" in pvc["spec"]["accessModes"]
    assert configmap["kind"] == "ConfigMap"
    mounts = {}
    for name, pod in _pod_specs(_cluster()).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        by_claim = {}
        for m in container["volumeMounts"]:
            vol = volumes[m["name"]]
            key = (vol.get("persistentVolumeClaim") or {}).get("claimName") or (vol.get("configMap") or {}).get("name")
            if key:
                by_claim[key] = m["mountPath"]
        mounts[name] = by_claim
        assert pod["securityContext"]["fsGroup"] == 1000  # the images run as uid 1000
        env = {e["name"]: e for e in container["env"]}
        assert env["TWITCH_OAUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
        assert env["S2D_CONFIG"]["value"] == "/etc/stream2dataset/stream2dataset.yaml"
    assert set(mounts) == {"head", "cpu-workers", "gpu-workers"}
    first = mounts["head"]
    assert first == {pvc["metadata"]["name"]: "/data", configmap["metadata"]["name"]: "/etc/stream2dataset"}
    assert all(m == first for m in mounts.values()), mounts


def test_configmap_config_validates_and_lives_on_the_shared_volume():
    _, configmap = _docs(KUBERAY / "storage.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "stream2dataset.yaml"
        path.write_text(configmap["data"]["stream2dataset.yaml"])
        cfg = load_config(path)
    assert cfg.storage.root == Path("/data/s2d") and cfg.storage.shared is True
    assert cfg.training.gpus_per_worker == 1


def test_rayjobs_target_the_cluster():
    cluster_name = _cluster()["metadata"]["name"]
    for path in KUBERAY.glob("rayjob-*.yaml"):
        (job,) = _docs(path)
        assert job["kind"] == "RayJob", path
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": cluster_name}
        assert job["spec"]["entrypoint"].startswith("stream2dataset ")
    (train,) = _docs(KUBERAY / "rayjob-train.yaml")
    argv = shlex.split(train["spec"]["entrypoint"])
    assert argv[1:3] == ["train", "diffusion"] and "--snapshot" in argv
    assert argv[argv.index("--gpus-per-worker") + 1] == "1" and int(argv[argv.index("--workers") + 1]) >= 1
    assert argv[argv.index("-c") + 1] == "/etc/stream2dataset/stream2dataset.yaml"


def test_cluster_launcher_config():
    (doc,) = _docs(DEPLOY / "cluster-aws.yaml")
    assert doc["provider"]["type"] == "aws"
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    gpu = [t for t in types.values() if t.get("resources", {}).get("GPU")]
    assert gpu and all(t["min_workers"] == 0 for t in gpu)
    assert any(t["node_config"]["InstanceType"].startswith("g5") for t in gpu)
    assert any(t["node_config"]["InstanceType"].startswith("p5") for t in gpu)
    text = (DEPLOY / "cluster-aws.yaml").read_text()
    assert "./run setup" in text and f"torch=={_pin('torch')}" in text and "efs" in text.lower()
    assert any("stream2dataset.yaml" in dst for dst in doc["file_mounts"])


# ---------------------------------------------------------------- commands are real


def _cli() -> dict:
    root = typer.main.get_command(app)
    return dict(root.commands)


def _options(cmd) -> set[str]:
    return {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")} | {"--help"}


COMMAND_RE = re.compile(r"(?<![\w/.=-])stream2dataset[ \t]+([a-z][a-z-]*)([^\n]*)")
STOP = {"#", "&&", "||", ";", "|", "\\", ">", "2>&1"}


def _command_lines(text: str) -> list[tuple[str, list[str]]]:
    found = []
    for m in COMMAND_RE.finditer(text):
        rest = m.group(2).split("`")[0].split("'")[0] if "`" in m.group(2) or "'" in m.group(2) else m.group(2)
        try:
            tokens = shlex.split(rest, comments=True)
        except ValueError:
            tokens = rest.split()
        cut = next((i for i, t in enumerate(tokens) if t in STOP), len(tokens))
        found.append((m.group(1), tokens[:cut]))
    return found


def _code_of_markdown(text: str) -> str:
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    without = re.sub(r"```.*?```", "", text, flags=re.S)
    return "\n".join(fenced + re.findall(r"`([^`\n]+)`", without))


def _deploy_commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in [*YAMLS, DEPLOY / "README.md"]:
        text = path.read_text()
        if path.suffix == ".md":
            text = _code_of_markdown(text)
        else:  # YAML: folded scalars (`>-`) spread a command over lines; read the parsed values too
            text += "\n" + "\n".join(str(d["spec"]["entrypoint"]) for d in _docs(path) if "entrypoint" in d.get("spec", {}))
        out += [(path.name, name, args) for name, args in _command_lines(text)]
    return out


def test_command_parser_sees_the_commands():
    names = {name for _, name, _ in _deploy_commands()}
    assert {"up", "train", "down", "status", "snapshot", "sample"} <= names
    assert _command_lines("see the stream2dataset package") == [("package", [])]  # prose would be caught


def test_every_command_in_deploy_is_a_real_one():
    commands = _cli()
    bad = []
    for where, name, args in _deploy_commands():
        cmd = commands.get(name)
        if cmd is None:
            bad.append(f"{where}: stream2dataset {name}: no such command (known: {', '.join(sorted(commands))})")
            continue
        if hasattr(cmd, "commands"):  # a group: `sample diffusion|temporal`
            sub = args[0] if args else None
            if sub not in cmd.commands and getattr(cmd, "default_command", None):  # `snapshot NAME`: create
                sub, args = cmd.default_command, [cmd.default_command, *args]
            if sub not in cmd.commands:
                bad.append(f"{where}: stream2dataset {name} {sub}: no such sub-command ({', '.join(cmd.commands)})")
                continue
            cmd, args = cmd.commands[sub], args[1:]
        for token in args:
            if token.startswith("-") and token != "-":
                opt = token.split("=")[0]
                if opt not in _options(cmd):
                    bad.append(f"{where}: stream2dataset {name}: unknown option {opt}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["up", "status", "down", "process", "dedup", "train"])
def test_cluster_commands_take_address_and_honour_ray_address(name):
    (param,) = [p for p in _cli()[name].params if "--address" in p.opts]
    assert param.envvar == "RAY_ADDRESS"


# ---------------------------------------------------------------- Dockerfiles


def _dockerfile(name: str) -> str:
    # join continuation lines so each instruction is one line
    return re.sub(r"\\\n", " ", (DEPLOY / name).read_text())


def _instructions(text: str, kind: str) -> list[str]:
    return [line.split(None, 1)[1] for line in text.splitlines() if line.strip().upper().startswith(kind + " ")]


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_use_the_projects_install_step(name):
    text = _dockerfile(name)
    runs = _instructions(text, "RUN")
    assert any("./run setup" in r for r in runs), "install with the project's own ./run script"
    assert re.search(r"S2D_VENV=/opt/venv", text) and re.search(r"PATH=/opt/venv/bin", text)
    copied = {src for c in _instructions(text, "COPY") for src in c.split()[:-1]}
    assert {"run", "pyproject.toml", "stream2dataset"} <= copied  # the script and what it installs
    assert "ffmpeg" in " ".join(r for r in runs if "apt-get install" in r)
    assert "S2D_MODELS=" in text  # model files fetched at build time by `./run setup` land here
    run_script = (ROOT / "run").read_text()
    assert "stream2dataset.processing.models" in run_script and "S2D_VENV" in run_script
    user = _instructions(text, "USER")
    assert user and user[-1].strip() not in {"root", "0"}
    assert _instructions(text, "WORKDIR")
    assert _instructions(text, "ENTRYPOINT")[-1].strip() == '["stream2dataset"]'


def test_cpu_image_base():
    assert _instructions(_dockerfile("Dockerfile.cpu"), "FROM")[0].strip() == "python:3.11-slim-bookworm"


def test_cuda_image_installs_the_pinned_torch_before_the_project():
    text = _dockerfile("Dockerfile.cuda")
    assert _instructions(text, "FROM")[0].startswith("nvidia/cuda:")
    args = dict(a.strip().split("=", 1) for a in _instructions(text, "ARG"))
    assert args["TORCH_VERSION"] == _pin("torch")
    assert args["TORCH_INDEX"].startswith("https://download.pytorch.org/whl/cu")
    runs = _instructions(text, "RUN")
    torch_at = next(i for i, r in enumerate(runs) if 'torch==${TORCH_VERSION}' in r and "${TORCH_INDEX}" in r)
    setup_at = next(i for i, r in enumerate(runs) if "./run setup" in r)
    assert torch_at < setup_at
    assert "python3.11" in " ".join(runs)


def test_the_configmap_s_config_also_validates_with_a_bucket_root():
    _, configmap = _docs(KUBERAY / "storage.yaml")
    doc = yaml.safe_load(configmap["data"]["stream2dataset.yaml"])
    doc["storage"] = {"root": "s3://my-bucket/s2d", "cache": "/cache/s2d"}
    cfg = parse_config(doc)
    assert cfg.storage.uri == "s3://my-bucket/s2d" and cfg.storage.any_node
    assert cfg.storage.root.parent == Path("/cache/s2d")


def test_readme_states_what_was_not_verified():
    text = (DEPLOY / "README.md").read_text()
    assert "not built in CI" in text
    assert "s3://" in text and "not against AWS itself" in text
    assert "not measured on a GPU" in text
