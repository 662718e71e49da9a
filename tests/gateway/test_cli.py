"""``fusebox check`` and ``fusebox hash-key``: exit codes, summaries, problems."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "fusebox.toml"
DEMO = ROOT / "examples" / "demo.toml"
ACME_DIGEST = "246c6a889938d703aa7ba351c2a6abcbba304db0c338c25b9939a23cafb13851"
KEY_ENVS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")
PROBLEM_LINE = re.compile(r"^.+\.toml:\d+: [\w.\[\]-]+: .+$")

BAD = """\
[server]
port = 99999

[defaults.breaker]
window_z = 3

[providers.p]
kind = "openai"
base_url = "https://example.test/v1"
api_key_env = "P_KEY"

[models.smart]
chain = ["p/a", "@static", "p/b"]

[tenants.t]
models = ["smart", "ghost"]
"""


def fusebox(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m gateway`` with the provider key variables unset."""
    environ = {k: v for k, v in os.environ.items() if k not in KEY_ENVS}
    environ.update(env)
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=environ,
        check=False,
        timeout=20,
    )


def test_check_passes_the_design_example_with_a_summary():
    """Check exits 0 and summarises providers, aliases and tenants of the example."""
    result = fusebox("check", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "providers (4):" in out
    assert "https://api.anthropic.com" in out
    assert re.search(r"anthropic\s+anthropic\s+https://api\.anthropic\.com", out)
    assert re.search(r"local\s+mock\s+built in", out)
    assert re.search(r"smart\s+chat\s+anthropic/claude-opus-4-5 -> openai/gpt-5.1", out)
    assert re.search(r"embed\s+embeddings\s+openai/text-embedding-3-small", out)
    assert "acme: 1 key (246c6a88...), aliases: smart, fast" in out
    assert "chain smart: openai/gpt-5.1 -> anthropic/claude-sonnet-4-5 -> @cache" in out
    assert ACME_DIGEST not in out
    assert result.stderr == ""


def test_check_warns_about_unset_key_variables_only():
    """Unset api_key_env variables are warnings; a set one is not mentioned."""
    result = fusebox(
        "check", str(EXAMPLE), OPENAI_API_KEY="sk-test", FUSEBOX_ADMIN_KEY="adm"
    )
    assert result.returncode == 0
    warnings = [
        line for line in result.stdout.splitlines() if line.startswith("warning:")
    ]
    assert len(warnings) == 2
    assert any("$ANTHROPIC_API_KEY is unset" in w for w in warnings)
    assert any("$AZURE_OPENAI_API_KEY is unset" in w for w in warnings)
    assert "OPENAI_API_KEY is unset" not in result.stdout.replace("AZURE_OPENAI", "")


def test_check_reports_every_problem_on_stderr(tmp_path):
    """Check exits 1 and prints each problem as path:line: key.path: message."""
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    result = fusebox("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    problems = lines[:-1]
    assert all(PROBLEM_LINE.match(line) for line in problems), lines
    assert problems == [
        f"{path}:2: server.port: Expected `int` <= 65535",
        f"{path}:5: defaults.breaker.window_z: unknown key (did you mean 'window_s'?)",
        f"{path}:13: models.smart.chain[1]: @static needs a `static` text on the alias",
        f"{path}:13: models.smart.chain[2]: never tried: @static must be the last rung",
        (
            f"{path}:15: tenants.t: needs key_sha256 or keys_env, "
            "or no request can authenticate as it"
        ),
        f"{path}:16: tenants.t.models[1]: unknown alias 'ghost'",
    ]
    assert lines[-1] == f"{path}: 6 problems; the config is not valid"
    text = result.stderr
    assert "Traceback" not in text


def test_check_of_a_missing_file_is_one_line(tmp_path):
    """A missing file gives one clear line on stderr and exit 1, no traceback."""
    result = fusebox("check", str(tmp_path / "absent.toml"))
    assert result.returncode == 1
    absent = tmp_path / "absent.toml"
    assert result.stderr.splitlines() == [
        f"fusebox check: cannot read {absent}: No such file or directory"
    ]


def test_check_passes_the_demo_without_warnings(capsys):
    """The offline demo config passes check with no warnings at all."""
    assert main(["check", str(DEMO)]) == 0
    out = capsys.readouterr().out
    assert "warning" not in out
    assert "demo: 1 key (9401404d...)" in out
    assert "smart  chat        mock/smart-large -> mock-backup/smart-small" in out


def test_check_of_invalid_toml_names_the_line(tmp_path, capsys):
    """A TOML syntax error is reported with its line number and exit 1."""
    path = tmp_path / "broken.toml"
    path.write_text('[server]\nhost = "x"\nport = \n', encoding="utf-8")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{path}:3: invalid TOML: ")


def test_check_of_a_non_utf8_file_is_one_line(tmp_path, capsys):
    """A file that is not UTF-8 text is refused in one line."""
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00")
    assert main(["check", str(path)]) == 1
    assert (
        capsys.readouterr().err
        == f"fusebox check: cannot read {path}: not UTF-8 text\n"
    )


def test_check_counts_keys_from_keys_env(tmp_path, capsys, monkeypatch):
    """A tenant's keys_env keys are counted and shown only as digest prefixes."""
    path = tmp_path / "env.toml"
    path.write_text(
        '[providers.m]\nkind = "mock"\n[models.fast]\nchain = ["m/x"]\n'
        '[tenants.team]\nkeys_env = "TEAM_KEYS"\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("TEAM_KEYS", "sk-team-1,sk-team-2")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "team: 2 keys (" in out
    assert "sk-team" not in out
    monkeypatch.delenv("TEAM_KEYS")
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "warning: $TEAM_KEYS is unset or empty (tenants.team.keys_env)" in out


def test_hash_key_prints_the_sha256_hex():
    """hash-key prints the digest DESIGN.md shows for sk-acme-example."""
    result = fusebox("hash-key", "sk-acme-example")
    assert result.returncode == 0
    assert result.stdout == f"{ACME_DIGEST}\n"


def test_hash_key_refuses_an_empty_key(capsys):
    """hash-key of an empty string is an error, not the digest of nothing."""
    assert main(["hash-key", ""]) == 1
    assert "empty" in capsys.readouterr().err


@pytest.mark.parametrize("depth", [5000])
def test_check_never_prints_a_traceback(tmp_path, capsys, depth):
    """Even absurd input ends in a one-problem report, not a traceback."""
    path = tmp_path / "deep.toml"
    path.write_text("a = " + "[" * depth + "]" * depth, encoding="utf-8")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.splitlines()[0] == f"{path}: invalid TOML: nested too deeply"


def test_check_summary_in_process(capsys, monkeypatch):
    """In process, check prints each provider with its kind, URL and key variable."""
    for name in KEY_ENVS:
        monkeypatch.delenv(name, raising=False)
    assert main(["check", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "openai     https://api.openai.com/v1, key $OPENAI_API_KEY" in out
    assert "breaker open 20 s" in out
    assert out.count("warning: ") == 4  # three provider keys and the admin key


def test_check_of_a_missing_file_in_process(tmp_path, capsys):
    """A missing file is one line on stderr and nothing on stdout."""
    assert main(["check", str(tmp_path / "absent.toml")]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.splitlines()) == 1


def test_hash_key_in_process(capsys):
    """hash-key prints exactly one line: the 64-digit hex digest."""
    assert main(["hash-key", "sk-acme-example"]) == 0
    assert capsys.readouterr().out == f"{ACME_DIGEST}\n"


def test_check_shortens_long_key_lists(tmp_path, capsys):
    """A tenant with many keys lists a few digest prefixes, never a whole digest."""
    digests = ", ".join(f'"{c * 64}"' for c in "abcde")
    path = tmp_path / "many.toml"
    path.write_text(
        '[providers.m]\nkind = "mock"\n[models.fast]\nchain = ["m/x"]\n'
        f"[tenants.big]\nkey_sha256 = [{digests}]\n",
        encoding="utf-8",
    )
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "big: 5 keys (aaaaaaaa..., bbbbbbbb..., cccccccc..., ...)" in out
    assert "a" * 64 not in out


def test_check_warns_about_a_config_without_tenants(tmp_path):
    """A config with no tenant passes the check but warns that every request is refused."""
    path = tmp_path / "empty.toml"
    path.write_text("", encoding="utf-8")
    result = fusebox("check", str(path))
    assert result.returncode == 0
    assert "warning: no [tenants.*]" in result.stdout
