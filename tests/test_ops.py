"""ops/: the scripts run for real, and every deployment file runs real commands.

Commands in the deployment files are checked against this version's click groups
(``token_worker.cli.cli`` and Celery's own), found by introspection, so a renamed
command or option fails here rather than at 3 a.m.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
from configparser import RawConfigParser
from pathlib import Path
from typing import Any

import click
import pytest
import redis
import yaml
from celery import Celery
from celery.bin.base import CLIContext
from celery.bin.celery import celery as celery_cli

from token_worker.cli import cli
from token_worker.config import parse_config

from .support import REPO, SECRET, env_with

OPS = REPO / "ops"
DEPLOY = OPS / "deploy"
VENV_BIN = Path(sys.executable).parent
# sample values for the variables deployment files leave to their environment
SAMPLE_ENV = {"HOSTNAME": "token-worker-5d8f7-abcde", "PORT": "5000"}


# -- command introspection -------------------------------------------------------------
def _click_path(group: click.Group, prog: str, args: list[str],
                obj: Any = None) -> tuple[list[str], Any]:
    """Parse ``args`` as click would; (command path, the leaf context). Raises UsageError."""
    ctx = group.make_context(prog, list(args), obj=obj)
    rest = [*ctx._protected_args, *ctx.args]
    assert rest, f"{prog}: no command given"
    name, cmd, rest = group.resolve_command(ctx, rest)
    assert cmd is not None and name is not None
    if isinstance(cmd, click.Group):
        path, leaf = _click_path(cmd, name, rest)
        return [name, *path], leaf
    return [name], cmd.make_context(name, list(rest), parent=ctx)


def _celery_obj() -> CLIContext:
    # Celery's option callbacks read defaults from the app in the context object
    return CLIContext(app=Celery("check", set_as_current=False), no_color=True, workdir=None,
                      quiet=True)


def expand(words: list[str], env: dict[str, str]) -> list[str]:
    """Shell/systemd-style expansion of ``$VAR``, ``${VAR}`` and ``${VAR:-default}``."""
    out: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$\{?(\w+)\}?", word)
        if whole:  # an unquoted lone variable splits into zero or more words
            out += env.get(whole[1], "").split()
            continue
        out.append(re.sub(r"\$\{(\w+):-([^}]*)\}|\$\{?(\w+)\}?",
                          lambda m: env.get(m[1] or m[3], m[2] or ""), word))
    return out


def validate(argv: list[str], env: dict[str, str] | None = None,
             apps: tuple[str, ...] = ("token_worker.celery_app",)) -> list[str]:
    """Check one command line a deployment file runs; returns what it runs, e.g.
    ``["token-worker", "worker"]``. Fails the test on anything this version lacks."""
    env = {**SAMPLE_ENV, **(env or {})}
    argv = expand(argv, env)
    prog = Path(argv[0]).name
    if prog in ("sh", "bash") and argv[1] == "-c":
        return validate(shlex.split(argv[2]), env, apps)
    if prog.startswith("python") and argv[1:3] == ["-m", "token_worker"]:
        prog, argv = "token-worker", ["token-worker", *argv[3:]]
    if prog == "token-worker":
        path, ctx = _click_path(cli, "token-worker", argv[1:])
        if path == ["worker"] and ctx.params["celery_args"]:
            # passed through to `celery worker`: must be real options there too
            celery_cli.commands["worker"].make_context(
                "worker", list(ctx.params["celery_args"]), obj=_celery_obj())
        return ["token-worker", *path]
    if prog == "celery":
        path, _ = _click_path(celery_cli, "celery", argv[1:], _celery_obj())
        ctx = celery_cli.make_context("celery", argv[1:], obj=_celery_obj())
        assert ctx.params["app"] in apps, argv
        assert importlib.util.find_spec("token_worker.celery_app") is not None
        return ["celery", *path]
    if prog in ("check", "force-refresh"):
        script = OPS / prog
        assert script.is_file() and os.access(script, os.X_OK), f"{script} missing"
        usage = subprocess.run([str(script), "--help"], capture_output=True, text=True,
                               check=True).stdout
        for opt in (a.split("=")[0] for a in argv[1:] if a.startswith("-")):
            assert opt in usage, f"ops/{prog} has no option {opt}"
        return [f"ops/{prog}"]
    raise AssertionError(f"unexpected command in a deployment file: {argv}")


def test_validate_rejects_what_this_version_does_not_have() -> None:
    # the checker itself: a typo'd command or option must fail
    assert validate(["token-worker", "--config", "x", "check", "--min-ttl", "5"]) == \
        ["token-worker", "check"]
    assert validate(["token-worker", "config", "check"]) == ["token-worker", "config", "check"]
    for bad in (["token-worker", "wrker"], ["token-worker", "check", "--min-tll", "5"],
                ["token-worker", "worker", "--no-beat", "--concurency", "2"],
                ["celery", "-A", "token_worker.celery_app", "beet"]):
        with pytest.raises(click.UsageError):
            validate(bad)


# -- systemd -----------------------------------------------------------------------------
def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """A systemd unit: section -> key -> every value (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        assert current is not None, f"{path.name}: key outside a section: {line}"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not key=value: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.partition("=") for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#"))
    return {k.strip(): v.strip().strip('"') for k, _, v in pairs}


UNITS = sorted(DEPLOY.glob("*.service"))


def test_the_unit_set_is_complete() -> None:
    assert {u.name for u in UNITS} >= {"token-worker.service", "token-worker-beat.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_unit_runs_real_commands_hardened(unit: Path) -> None:
    sections = parse_unit(unit)
    assert set(sections) == {"Unit", "Service", "Install"}
    service = sections["Service"]
    env_files = service["EnvironmentFile"]
    assert env_files == ["/etc/token_worker/token_worker.env"]
    env = env_file(DEPLOY / "token_worker.env")
    assert env["TOKEN_WORKER_CONFIG"] == "/etc/token_worker/token_worker.toml"
    (exec_start,) = service["ExecStart"]
    # every choice the env file documents for the worker args must be a valid command
    for worker_args in ("", "--no-beat", "--no-beat -c 2"):
        ran = validate(shlex.split(exec_start), {**env, "TOKEN_WORKER_WORKER_ARGS": worker_args})
    assert ran in (["token-worker", "worker"], ["celery", "beat"], ["token-worker", "metrics"])
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "DynamicUser": "yes", "ProtectHome": "yes"}.items():
        assert service[key] == [value], f"{unit.name}: {key}"
    assert "2" in service.get("RestartPreventExitStatus", ["2"])[0]


def test_worker_unit_hands_the_secret_to_the_path_the_config_reads() -> None:
    service = parse_unit(DEPLOY / "token-worker.service")["Service"]
    (credential,) = service["LoadCredential"]
    name, _, source = credential.partition(":")
    assert source.startswith("/etc/token_worker/credentials/")
    config = parse_config(tomllib.loads((DEPLOY / "token_worker.toml").read_text()))
    secret_file = config.clients["main"].client_secret_file
    assert secret_file == f"/run/credentials/token-worker.service/{name}"
    # the beat and the exporter never see the secret
    for other in ("token-worker-beat.service", "token-worker-metrics.service"):
        assert "LoadCredential" not in parse_unit(DEPLOY / other)["Service"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    for unit in UNITS:
        # point ExecStart at this venv, which verify requires to exist
        text = unit.read_text().replace("/opt/token_worker/bin/", f"{VENV_BIN}/")
        (tmp_path / unit.name).write_text(text)
    out = subprocess.run(["systemd-analyze", "verify", *sorted(map(str, tmp_path.iterdir()))],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # nothing said about our units (other noise depends on the host's systemd)
    assert not [line for line in out.stderr.splitlines() if "token-worker" in line], out.stderr


# -- example configs --------------------------------------------------------------------
def k8s_docs() -> dict[str, list[dict[str, Any]]]:
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
            for p in sorted((DEPLOY / "k8s").glob("*.yaml"))}


def configmap_toml() -> str:
    (cm,) = k8s_docs()["configmap.yaml"]
    return str(cm["data"]["token_worker.toml"])


@pytest.mark.parametrize("text", [(DEPLOY / "token_worker.toml").read_text(), configmap_toml()],
                         ids=["systemd", "k8s"])
def test_example_configs_are_valid_for_this_version(text: str) -> None:
    config = parse_config(tomllib.loads(text))  # unknown keys would be refused here
    assert config.metrics.port > 0
    assert config.clients["main"].client_secret_file


# -- Kubernetes --------------------------------------------------------------------------
def _pod_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for name, docs in k8s_docs().items():
        for doc in docs:
            if doc["kind"] == "Deployment":
                specs[f"{name}:{doc['metadata']['name']}"] = doc["spec"]["template"]["spec"]
            elif doc["kind"] == "CronJob":
                specs[f"{name}:{doc['metadata']['name']}"] = \
                    doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return specs


def test_kustomization_lists_existing_manifests() -> None:
    (kustomization,) = k8s_docs()["kustomization.yaml"]
    for resource in kustomization["resources"]:
        assert (DEPLOY / "k8s" / resource).is_file(), resource
    assert {"deployment.yaml", "configmap.yaml", "cronjob-check.yaml"} <= \
        set(kustomization["resources"])


def test_k8s_containers_run_real_commands_with_config_and_secret_mounted() -> None:
    config = parse_config(tomllib.loads(configmap_toml()))
    secret_dir = str(Path(config.clients["main"].client_secret_file or "").parent)
    ran: dict[str, list[str]] = {}
    for where, spec in _pod_specs().items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            env = {e["name"]: e["value"] for e in container.get("env", [])}
            ran[where] = validate(container["command"], env)
            mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
            # the config from the ConfigMap, where TOKEN_WORKER_CONFIG points
            config_dir = str(Path(env["TOKEN_WORKER_CONFIG"]).parent)
            assert mounts[config_dir]["configMap"]["name"] == "token-worker-config"
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            for probe in ("livenessProbe", "readinessProbe"):
                if "exec" in container.get(probe, {}):
                    validate(container[probe]["exec"]["command"], env)
            if ran[where] == ["token-worker", "worker"]:
                # refreshers get the secret as files; nothing else does
                assert "secret" in mounts[secret_dir]
                assert "livenessProbe" in container
            else:
                assert not any("secret" in v for v in mounts.values()), where
    assert ["token-worker", "worker"] in ran.values()
    assert ["ops/check"] in ran.values()
    assert ["token-worker", "metrics"] in ran.values()


def test_k8s_worker_probes_ping_celery_and_check_tokens() -> None:
    (deployment,) = k8s_docs()["deployment.yaml"]
    (worker,) = deployment["spec"]["template"]["spec"]["containers"]
    assert validate(worker["livenessProbe"]["exec"]["command"]) == ["celery", "inspect"]
    assert validate(worker["readinessProbe"]["exec"]["command"]) == ["token-worker", "check"]
    assert worker["ports"][0]["containerPort"] == \
        parse_config(tomllib.loads(configmap_toml())).metrics.port


def test_dockerfile_installs_the_ops_scripts_the_cronjob_runs() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd is not None
    assert validate(json.loads(cmd[1])) == ["token-worker", "worker"]
    (cronjob,) = k8s_docs()["cronjob-check.yaml"]
    spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = spec["containers"][0]["command"][0]
    assert script.startswith("/opt/token_worker/ops/")
    assert f"/src/ops/{Path(script).name}" in text
    extras = re.search(r"/src\[([\w,]+)\]", text)
    assert extras is not None
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert set(extras[1].split(",")) <= set(pyproject["project"]["optional-dependencies"])


# -- Procfile and supervisord ----------------------------------------------------------
def test_procfile_runs_real_commands() -> None:
    processes = {}
    for line in (DEPLOY / "Procfile").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, command = line.partition(":")
            processes[name] = validate(shlex.split(command))
    assert processes["worker"] == ["token-worker", "worker"]
    assert "metrics" in processes


def test_supervisord_programs_run_real_commands() -> None:
    parser = RawConfigParser(strict=True, inline_comment_prefixes=(";",))
    parser.read(DEPLOY / "supervisord.conf")
    programs = [s for s in parser.sections() if s.startswith("program:")]
    assert "program:token-worker" in programs
    for section in programs:
        program = parser[section]
        env = dict(re.findall(r'(\w+)="([^"]*)"', program["environment"]))
        assert env["TOKEN_WORKER_CONFIG"].endswith(".toml")
        validate(shlex.split(program["command"]), env)
        assert program["stopsignal"] == "TERM"
        assert program["user"] != "root"


# -- the scripts, for real ---------------------------------------------------------------
def script_env(config_path: Path, **extra: str) -> dict[str, str]:
    env = env_with(TOKEN_WORKER_CONFIG=str(config_path), **extra)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    for key in ("TOKEN_WORKER_REDIS_URL", "TOKEN_WORKER_BROKER_URL",
                "TOKEN_WORKER_CHECK_MIN_TTL", "TOKEN_WORKER_REFRESH_WAIT", "TOKEN_WORKER_BIN"):
        if key not in extra:
            env.pop(key, None)
    return env


def run_script(script: Path, *args: str, env: dict[str, str], cwd: Path,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{text}"
    return lines[0]


def refresh_local(config_path: Path) -> None:
    out = subprocess.run([str(VENV_BIN / "token-worker"), "--config", str(config_path),
                          "refresh", "--all", "--local"], capture_output=True, text=True,
                         env=script_env(config_path), timeout=60)
    assert out.returncode == 0, out.stderr


def test_check_script_exits_1_without_tokens_and_0_with_fresh_ones(
        config_path: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = script_env(config_path)
    out = run_script(OPS / "check", env=env, cwd=elsewhere)
    assert out.returncode == 1, out.stderr
    reason = one_line(out.stderr)
    assert reason.startswith("check: FAILED (exit 1):")
    assert "payments: no token (need 120s)" in reason and "refunds" in reason
    assert out.stdout == ""

    refresh_local(config_path)
    out = run_script(OPS / "check", env=env, cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert one_line(out.stdout) == "check: OK 2 profiles have at least 120s left"

    # a longer requirement than the emulator's one-hour tokens: by argument, option or env
    for args, extra in ((["7200"], {}), (["--min-ttl", "7200"], {}),
                        ([], {"TOKEN_WORKER_CHECK_MIN_TTL": "7200"})):
        out = run_script(OPS / "check", *args, env=script_env(config_path, **extra),
                         cwd=elsewhere)
        assert out.returncode == 1, (args, extra)
        assert "(need 7200s)" in one_line(out.stderr)


def test_check_script_falls_back_to_python_m_token_worker(config_path: Path,
                                                           tmp_path: Path) -> None:
    refresh_local(config_path)
    # a copy alone in a directory (no checkout venv beside it), no token-worker on PATH
    copy = tmp_path / "bin" / "check"
    copy.parent.mkdir()
    shutil.copy2(OPS / "check", copy)
    env = script_env(config_path, PYTHON=sys.executable)
    env["PATH"] = "/usr/bin:/bin"
    out = run_script(copy, "--config", str(config_path), env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert one_line(out.stdout).startswith("check: OK")


def test_check_script_reports_an_unreachable_redis_in_one_line(tmp_path: Path,
                                                               config_path: Path) -> None:
    text = config_path.read_text()
    dead = re.sub(r'url = "redis://127.0.0.1:\d+/0"', 'url = "redis://127.0.0.1:1/0"', text)
    (tmp_path / "dead.toml").write_text(dead)
    out = run_script(OPS / "check", env=script_env(tmp_path / "dead.toml"), cwd=tmp_path)
    assert out.returncode == 1
    assert "Redis unreachable" in one_line(out.stderr)


@pytest.mark.parametrize(("script", "args"), [
    ("check", ["--min-ttl", "soon"]), ("check", ["--bogus"]),
    ("force-refresh", []), ("force-refresh", ["payments", "--wait", "x"]),
])
def test_scripts_refuse_bad_usage_with_exit_2(script: str, args: list[str],
                                              tmp_path: Path) -> None:
    out = run_script(OPS / script, *args, env=script_env(tmp_path / "none.toml"), cwd=tmp_path)
    assert out.returncode == 2
    assert one_line(out.stderr).startswith(f"{script}: FAILED (exit 2):")


def test_check_script_invalid_config_is_exit_2_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("[profiles.payments]\nscopes = []\n")
    out = run_script(OPS / "check", env=script_env(tmp_path / "bad.toml"), cwd=tmp_path)
    assert out.returncode == 2
    assert "profiles.payments.scopes: must not be empty" in one_line(out.stderr)


def test_force_refresh_with_no_worker_fails_in_one_line(config_path: Path,
                                                        tmp_path: Path) -> None:
    started = time.monotonic()
    out = run_script(OPS / "force-refresh", "payments", "--wait", "3",
                     env=script_env(config_path), cwd=tmp_path)
    assert out.returncode == 1, out.stderr
    reason = one_line(out.stderr)
    assert reason.startswith("force-refresh: FAILED (exit 1): payments: FAILED:")
    assert "no worker answered within 3s" in reason
    assert out.stdout == ""
    assert time.monotonic() - started < 30
    assert SECRET not in out.stderr


def test_python_m_token_worker_is_the_cli() -> None:
    out = subprocess.run([sys.executable, "-m", "token_worker", "--help"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0
    for command in ("status", "check", "refresh", "purge", "metrics", "worker"):
        assert command in out.stdout


# -- status at 3 a.m. --------------------------------------------------------------------
def test_status_shows_what_on_call_needs(config_path: Path, rds: redis.Redis) -> None:
    refresh_local(config_path)
    out = subprocess.run([str(VENV_BIN / "token-worker"), "status"], capture_output=True,
                         text=True, env=script_env(config_path), timeout=30)
    assert out.returncode == 0, out.stderr
    header = out.stdout.splitlines()[0]
    for column in ("STATE", "EXPIRES IN", "NEXT REFRESH", "LAST SUCCESS", "FAILURES",
                   "FINGERPRINT", "LAST ERROR"):
        assert column in header
    payments = next(line for line in out.stdout.splitlines() if line.startswith("payments"))
    assert " valid " in payments and " ago " in payments


def test_status_watch_redraws_until_ctrl_c_then_exits_0(config_path: Path) -> None:
    refresh_local(config_path)
    proc = subprocess.Popen([str(VENV_BIN / "token-worker"), "status", "--watch"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=script_env(config_path))
    seen: list[str] = []
    try:
        # Two redraws at least, by itself: wait for them rather than for a fixed time
        # (a loaded machine can take over a second just to start the command).
        assert proc.stdout is not None
        reader = threading.Thread(target=lambda: seen.extend(proc.stdout or ()), daemon=True)
        reader.start()
        deadline = time.monotonic() + 30
        while "".join(seen).count("PROFILE") < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        reader.join(timeout=10)
        stderr = proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "".join(seen).count("PROFILE") >= 2
    assert "Traceback" not in stderr


def test_purge_proceeds_only_when_confirmed(config_path: Path, rds: redis.Redis) -> None:
    refresh_local(config_path)
    tw = [str(VENV_BIN / "token-worker"), "purge", "payments"]
    env = script_env(config_path)
    out = subprocess.run(tw, input="n\n", capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 1 and rds.exists("stitch:token:payments")
    out = subprocess.run(tw, input="y\n", capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "Delete the token of 'payments'?" in out.stdout
    assert not rds.exists("stitch:token:payments")
    assert rds.exists("stitch:token:refunds")
    out = subprocess.run([*tw, "--yes"], capture_output=True, text=True, env=env, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and "had no token" in out.stdout


# -- the docs ---------------------------------------------------------------------------
def documented_commands() -> list[tuple[str, list[str]]]:
    """Every token-worker / celery / ops command in the sh blocks of the README and runbook."""
    found = []
    for doc in (REPO / "README.md", OPS / "RUNBOOK.md"):
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.S):
            for line in block.splitlines():
                line = line.split(" #")[0].strip()
                if not line or "$(" in line or "|" in line:
                    continue
                words = shlex.split(line)
                if words[0] == "kubectl" and "--" in words:
                    words = words[words.index("--") + 1:]
                while words and re.match(r"^\w+=", words[0]):  # VAR=value command
                    words = words[1:]
                if words and Path(words[0]).name in ("token-worker", "celery", "check",
                                                      "force-refresh"):
                    found.append((f"{doc.name}: {line}", words))
    return found


def test_commands_in_readme_and_runbook_are_real() -> None:
    commands = documented_commands()
    assert len(commands) >= 15
    for where, words in commands:
        try:
            validate(words, apps=("token_worker.celery_app", "proj"))
        except (click.UsageError, AssertionError) as exc:
            raise AssertionError(f"{where}: {exc}") from None


def test_runbook_covers_every_failure_on_call_meets() -> None:
    headings = {h.strip().lower() for h in
                re.findall(r"^#+ (.*)$", (OPS / "RUNBOOK.md").read_text(), re.M)}
    for failure in ("invalid_client", "invalid_scope", "endpoint outage", "redis loss",
                    "stuck lock", "certificate expiring", "secret rotation"):
        assert failure in headings
