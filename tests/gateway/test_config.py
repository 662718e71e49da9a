"""The config contract: loading, merging, every validation class, tenant keys."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import (
    GatewayConfig,
    MockProviderConfig,
    ModelConfig,
    check_references,
    find_line,
    load_config,
    parse_config,
)
from gateway.tenants import key_digest, resolve_tenant, tenant_keys
from providers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DESIGN = Path("/work/shared/DESIGN.md")
ACME_DIGEST = "246c6a889938d703aa7ba351c2a6abcbba304db0c338c25b9939a23cafb13851"
ORIGIN = "cfg.toml"

BASE = f"""\
[providers.p]
kind = "openai"
base_url = "https://example.test/v1"
api_key_env = "P_KEY"

[providers.q]
kind = "anthropic"
api_key_env = "Q_KEY"

[models.smart]
chain = ["p/large", "q/small", "@cache", "@static"]
static = "busy"

[models.fast]
chain = ["q/small", "@cache"]

[tenants.t]
key_sha256 = ["{ACME_DIGEST}"]
"""


def design_toml() -> str:
    """Return the ```toml block of DESIGN.md §3."""
    text = DESIGN.read_text(encoding="utf-8")
    section = text[text.index("## 3.") :]
    return section.split("```toml\n", 1)[1].split("```", 1)[0]


def problems_of(text: str) -> list[str]:
    """Return the problems ``parse_config`` reports for ``text``."""
    with pytest.raises(ConfigError) as caught:
        parse_config(text, origin=ORIGIN)
    return caught.value.problems


def line_of(text: str, marker: str) -> int:
    """Return the 1-based line of the first line of ``text`` holding ``marker``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def the_problem(problems: list[str], path: str) -> str:
    """Return the one problem reported at exactly ``path``."""
    found = [
        p for p in problems if re.match(rf"{ORIGIN}(:\d+)?: {re.escape(path)}: ", p)
    ]
    assert len(found) == 1, problems
    return found[0]


@pytest.mark.skipif(not DESIGN.exists(), reason="DESIGN.md is not next to the repo")
def test_design_example_loads_as_written():
    """The example in DESIGN.md §3 loads as written, without any key variables."""
    config = parse_config(design_toml(), origin="DESIGN.md")
    assert set(config.providers) == {"openai", "anthropic", "azure", "local"}
    assert config.tenants["acme"].key_sha256 == [ACME_DIGEST]


@pytest.mark.skipif(not DESIGN.exists(), reason="DESIGN.md is not next to the repo")
def test_example_file_is_the_design_example():
    """examples/fusebox.toml is the DESIGN.md example verbatim."""
    example = (ROOT / "examples" / "fusebox.toml").read_text(encoding="utf-8")
    assert example.strip() == design_toml().strip()


def test_example_file_loads():
    """examples/fusebox.toml loads into the documented tree."""
    config = load_config(ROOT / "examples" / "fusebox.toml")
    assert config.server.port == 8080
    assert config.models["embed"].endpoint == "embeddings"
    assert config.chain_for("acme", "smart")[0] == "openai/gpt-5.1"
    assert config.chain_for("acme", "fast") == config.models["fast"].chain
    assert isinstance(config.providers["local"], MockProviderConfig)


def test_demo_config_is_offline_and_lets_the_demo_key_in():
    """examples/demo.toml uses only mock providers and admits sk-fusebox-demo."""
    config = load_config(ROOT / "examples" / "demo.toml")
    assert all(isinstance(p, MockProviderConfig) for p in config.providers.values())
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.missing_key_envs({}) == []
    table = tenant_keys(config, {})
    assert resolve_tenant(table, "sk-fusebox-demo") == "demo"
    assert config.models["smart"].chain[-2:] == ["@cache", "@static"]


def test_defaults_merge_under_provider_overrides():
    """A provider's own table wins key by key; the rest comes from [defaults.*]."""
    config = load_config(ROOT / "examples" / "fusebox.toml")
    anthropic, openai = config.providers["anthropic"], config.providers["openai"]
    assert anthropic.breaker.open_s == 20
    assert openai.breaker.open_s == 10
    assert anthropic.bulkhead.max_concurrent == 32
    assert anthropic.bulkhead.max_waiting == config.defaults.bulkhead.max_waiting


def test_defaults_fill_keys_the_override_leaves_out():
    """[defaults.bulkhead] fills the keys a provider's inline bulkhead leaves out."""
    text = (
        "[defaults.bulkhead]\nmax_waiting = 7\nwait_s = 0.1\n"
        "[defaults.breaker]\nopen_s = 10\n" + BASE
    )
    text = text.replace(
        'api_key_env = "Q_KEY"\n',
        'api_key_env = "Q_KEY"\nbulkhead = { max_concurrent = 32 }\n'
        "breaker = { open_s = 20 }\n",
    )
    config = parse_config(text)
    q, p = config.providers["q"], config.providers["p"]
    assert (q.bulkhead.max_concurrent, q.bulkhead.max_waiting, q.bulkhead.wait_s) == (
        32,
        7,
        0.1,
    )
    assert (p.bulkhead.max_concurrent, p.bulkhead.max_waiting) == (100, 7)
    assert (q.breaker.open_s, p.breaker.open_s) == (20, 10)


CASES = [
    # (id, text, path, marker on the expected line, message fragment)
    (
        "unknown key",
        "[defaults.breaker]\nwindow_z = 3\n" + BASE,
        "defaults.breaker.window_z",
        "window_z",
        "unknown key",
    ),
    (
        "unknown key in an inline table",
        BASE.replace('"Q_KEY"\n', '"Q_KEY"\nbreaker = { open_s = 20, window_z = 1 }\n'),
        "providers.q.breaker.window_z",
        "window_z",
        "unknown key",
    ),
    (
        "unknown section",
        BASE + "[metrics]\nport = 9\n",
        "metrics",
        "[metrics]",
        "unknown key",
    ),
    (
        "bad range",
        "[server]\nport = 70000\n" + BASE,
        "server.port",
        "port = 70000",
        "65535",
    ),
    (
        "bad range in an inline table",
        BASE.replace('"Q_KEY"\n', '"Q_KEY"\nbulkhead = { max_concurrent = 0 }\n'),
        "providers.q.bulkhead.max_concurrent",
        "bulkhead =",
        ">= 1",
    ),
    (
        "wrong type",
        "[defaults.retry]\nattempts = 'three'\n" + BASE,
        "defaults.retry.attempts",
        "attempts",
        "Expected `int`, got `str`",
    ),
    (
        "unknown provider in chain",
        BASE.replace('"q/small", "@cache"]', '"nope/small", "@cache"]'),
        "models.fast.chain[0]",
        'chain = ["nope/small"',
        "unknown provider 'nope'",
    ),
    (
        "unknown alias in tenant models",
        BASE + 'models = ["smart", "ghost"]\n',
        "tenants.t.models[1]",
        "ghost",
        "unknown alias 'ghost'",
    ),
    (
        "tenant chain for unknown alias",
        BASE + '[tenants.t.chains]\nghost = ["p/large"]\n',
        "tenants.t.chains.ghost",
        "ghost =",
        "unknown alias 'ghost'",
    ),
    (
        "@static without text",
        BASE.replace('"q/small", "@cache"]', '"q/small", "@static"]'),
        "models.fast.chain[1]",
        'chain = ["q/small", "@static"]',
        "needs a `static` text",
    ),
    (
        "rung after @static",
        BASE.replace('"@cache", "@static"]', '"@static", "@cache"]'),
        "models.smart.chain[3]",
        '"@static", "@cache"]',
        "@static must be the last rung",
    ),
    (
        "deployment after @cache",
        BASE.replace('["q/small", "@cache"]', '["@cache", "q/small"]'),
        "models.fast.chain[1]",
        '["@cache", "q/small"]',
        "@cache must follow every deployment",
    ),
    (
        "bad rung syntax",
        BASE.replace('["q/small", "@cache"]', '["small", "@cache"]'),
        "models.fast.chain[0]",
        '["small", "@cache"]',
        "not of the form provider/model",
    ),
    (
        "unknown special rung",
        BASE.replace('["q/small", "@cache"]', '["q/small", "@stale"]'),
        "models.fast.chain[1]",
        "@stale",
        "unknown rung '@stale'",
    ),
    (
        "bad rung in a multi-line array",
        BASE.replace('["q/small", "@cache"]', '[\n  "q/small",\n  "q small",\n]'),
        "models.fast.chain[1]",
        '"q small"',
        "not of the form provider/model",
    ),
    (
        "tenant chain rung after @static",
        BASE + '[tenants.t.chains]\nsmart = ["@static", "p/large"]\n',
        "tenants.t.chains.smart[1]",
        "smart = [",
        "@static must be the last rung",
    ),
    (
        "missing tenant keys",
        BASE.replace(f'key_sha256 = ["{ACME_DIGEST}"]\n', "max_concurrent = 5\n"),
        "tenants.t",
        "[tenants.t]",
        "needs key_sha256 or keys_env",
    ),
    (
        "malformed key digest",
        BASE.replace(ACME_DIGEST, "sk-acme-example"),
        "tenants.t.key_sha256[0]",
        "key_sha256",
        "sha256 hex digest",
    ),
    (
        "bad keys_env name",
        BASE + 'keys_env = "ACME-KEYS"\n',
        "tenants.t.keys_env",
        "keys_env",
        "environment variable name",
    ),
    (
        "base_url without http",
        BASE.replace("https://example.test/v1", "example.test/v1"),
        "providers.p.base_url",
        "base_url",
        "http:// or https:// URL",
    ),
    (
        "missing required key",
        BASE + '[providers.r]\nkind = "openai"\n',
        "providers.r.base_url",
        "[providers.r]",
        "required key is missing",
    ),
    (
        "unknown provider kind",
        BASE + '[providers.r]\nkind = "bedrock"\n',
        "providers.r.kind",
        '"bedrock"',
        "unknown kind 'bedrock'",
    ),
    (
        "mock provider with a base_url",
        BASE + '[providers.m]\nkind = "mock"\nbase_url = "http://x"\n',
        "providers.m.base_url",
        '"http://x"',
        'a kind = "mock" provider has no upstream URL',
    ),
    (
        "embeddings chain without a deployment",
        BASE + '[models.embed]\nendpoint = "embeddings"\nchain = ["@cache"]\n',
        "models.embed.chain",
        'chain = ["@cache"]',
        "needs a provider/model rung",
    ),
    (
        "one key in two tenants",
        BASE + f'[tenants.u]\nkey_sha256 = [ "{ACME_DIGEST}" ]\n',
        "tenants.u.key_sha256[0]",
        '[ "',  # the second tenant's line
        "already belongs to tenant 't'",
    ),
    (
        "redis store without url",
        '[store]\nkind = "redis"\n' + BASE,
        "store.url",
        "[store]",
        'required when store.kind = "redis"',
    ),
]


@pytest.mark.parametrize(
    ("text", "path", "marker", "fragment"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_problem_names_its_path_and_line(text, path, marker, fragment):
    """Each validation class is reported as ``origin:LINE: path: message``."""
    problem = the_problem(problems_of(text), path)
    assert problem.startswith(f"{ORIGIN}:{line_of(text, marker)}: {path}: ")
    assert fragment in problem


def test_invalid_toml_reports_its_line():
    """A TOML syntax error is one problem carrying the parser's line number."""
    problems = problems_of(BASE + "[server\nport = 1\n")
    assert len(problems) == 1
    assert problems[0].startswith(f"{ORIGIN}:{BASE.count(chr(10)) + 1}: invalid TOML: ")


def test_absurd_nesting_is_a_problem_not_a_crash():
    """Arrays nested beyond the parser's depth give a ConfigError, not a crash."""
    problems = problems_of("a = " + "[" * 5000 + "]" * 5000)
    assert problems == [f"{ORIGIN}: invalid TOML: nested too deeply"]


def test_several_problems_are_reported_together():
    """One load reports problems from every section, in file order."""
    text = (
        "[server]\nport = -1\nhots = 'x'\n"
        + BASE.replace('"q/small", "@cache"]', '"nope/x", "@cache"]')
        + 'models = ["ghost"]\n'
    )
    problems = problems_of(text)
    paths = [p.split(": ")[1] for p in problems]
    assert paths == [
        "server.port",
        "server.hots",
        "models.fast.chain[0]",
        "tenants.t.models[0]",
    ]
    lines = [int(p.split(":")[1]) for p in problems]
    assert lines == sorted(lines)


def test_defaults_problem_is_reported_once():
    """A bad [defaults.X] key is reported at defaults.X, not once per provider."""
    text = "[defaults.breaker]\nwindow_z = 3\nopen_s = -1\n" + BASE
    problems = problems_of(text)
    assert len(problems) == 2, problems
    assert the_problem(problems, "defaults.breaker.window_z")
    assert the_problem(problems, "defaults.breaker.open_s")


def test_invalid_entries_are_not_reported_again_as_unknown():
    """A provider with a bad key is still known to the chains that name it."""
    text = BASE.replace('"Q_KEY"\n', '"Q_KEY"\nprefill = "yes"\n')
    problems = problems_of(text)
    assert len(problems) == 1
    assert the_problem(problems, "providers.q.prefill")


def test_problems_in_a_broken_entry_and_its_references_both_surface():
    """A tenant with a bad key still has its aliases checked in the same run."""
    text = BASE + 'keys_env = "1X"\nmodels = ["ghost"]\n'
    problems = problems_of(text)
    assert the_problem(problems, "tenants.t.keys_env")
    assert the_problem(problems, "tenants.t.models[0]")


def test_unreadable_file_is_one_problem(tmp_path):
    """A missing file is a ConfigError naming the path, not an OSError."""
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.toml")
    assert caught.value.problems == [
        f"{tmp_path / 'absent.toml'}: cannot read: No such file or directory"
    ]


def test_find_line_locates_nested_keys():
    """find_line finds inline-table keys and array elements, else the nearest table."""
    text = BASE.replace('"Q_KEY"\n', '"Q_KEY"\nbulkhead = { max_concurrent = 3 }\n')
    assert find_line(text, "providers.q.bulkhead.max_concurrent") == line_of(
        text, "bulkhead"
    )
    assert find_line(text, "models.smart.chain[2]") == line_of(text, '["p/large"')
    assert find_line(text, "providers.q.timeouts") == line_of(text, "[providers.q]")
    assert find_line(text, "nowhere") is None


def test_check_references_on_a_built_config():
    """check_references reports a chain naming an unknown provider as path: message."""
    config = GatewayConfig(models={"x": ModelConfig(chain=["nope/m"])})
    assert check_references(config) == ["models.x.chain[0]: unknown provider 'nope'"]


def test_missing_key_envs_lists_only_unset_variables():
    """missing_key_envs names the unset api_key_env variables, mock providers aside."""
    config = parse_config(BASE + '[providers.m]\nkind = "mock"\n')
    assert config.missing_key_envs({}) == ["P_KEY", "Q_KEY"]
    assert config.missing_key_envs({"P_KEY": "sk-1"}) == ["Q_KEY"]


def test_round_trip_gives_an_equal_config():
    """A loaded config survives a msgspec JSON encode/decode round trip unchanged."""
    config = load_config(ROOT / "examples" / "fusebox.toml")
    again = msgspec.json.decode(msgspec.json.encode(config), type=GatewayConfig)
    assert again == config


@given(
    max_concurrent=st.integers(1, 10_000),
    open_s=st.floats(0.001, 1e6, allow_nan=False),
    rungs=st.lists(st.sampled_from(["p/a", "q/b", "p/c"]), min_size=1, unique=True),
    tail=st.sampled_from([[], ["@cache"], ["@static"], ["@cache", "@static"]]),
)
def test_round_trip_of_generated_configs(max_concurrent, open_s, rungs, tail):
    """Any valid generated config loads with its values and round-trips unchanged."""
    chain = ", ".join(f'"{r}"' for r in [*rungs, *tail])
    text = BASE + (
        f"[defaults.bulkhead]\nmax_concurrent = {max_concurrent}\n"
        f"[defaults.breaker]\nopen_s = {open_s!r}\n"
        f'[models.gen]\nchain = [{chain}]\nstatic = "s"\n'
    )
    config = parse_config(text)
    assert config.providers["p"].bulkhead.max_concurrent == max_concurrent
    assert config.providers["q"].breaker.open_s == open_s
    again = msgspec.json.decode(msgspec.json.encode(config), type=GatewayConfig)
    assert again == config


def test_tenant_keys_from_key_sha256_and_keys_env():
    """keys_env keys are hashed at load and resolve to their tenant like key_sha256."""
    text = BASE + '[tenants.u]\nkeys_env = "U_KEYS"\n'
    config = parse_config(text)
    table = tenant_keys(config, {"U_KEYS": " sk-u-1, ,sk-u-2 "})
    assert table == {
        ACME_DIGEST: "t",
        key_digest("sk-u-1"): "u",
        key_digest("sk-u-2"): "u",
    }
    assert resolve_tenant(table, "sk-u-2") == "u"
    assert resolve_tenant(table, "sk-acme-example") == "t"
    assert "sk-u-1" not in repr(table)


def test_unset_keys_env_gives_the_tenant_no_keys():
    """A tenant whose keys_env is unset has no keys, and nobody resolves to it."""
    config = parse_config(BASE + '[tenants.u]\nkeys_env = "U_KEYS"\n')
    table = tenant_keys(config, {})
    assert set(table.values()) == {"t"}
    assert resolve_tenant(table, "") is None


def test_a_key_of_two_tenants_is_refused():
    """The same key in two tenants' keys_env variables is a ConfigError."""
    config = parse_config(BASE + '[tenants.u]\nkeys_env = "U_KEYS"\n')
    with pytest.raises(ConfigError, match="also belongs to tenant 't'"):
        tenant_keys(config, {"U_KEYS": "sk-acme-example"})


def test_resolver_returns_the_tenant_or_none():
    """resolve_tenant finds the right tenant and returns None for a wrong key."""
    table = {key_digest("sk-a"): "a", key_digest("sk-b"): "b"}
    assert resolve_tenant(table, "sk-a") == "a"
    assert resolve_tenant(table, "sk-b") == "b"
    assert resolve_tenant(table, "sk-c") is None
    assert resolve_tenant(table, key_digest("sk-a")) is None
    assert resolve_tenant(table, "sk-a\udcff") is None


def test_key_digest_matches_the_design_example():
    """key_digest("sk-acme-example") is the digest DESIGN.md shows."""
    assert key_digest("sk-acme-example") == ACME_DIGEST


TRICKY = '''\
# a comment with [brackets] and key = "value"
title = """
[providers.fake]
kind = "x"
"""
'literal key' = 'C:\\path'   # literal strings keep backslashes
"quoted.key" . inner = 1
escaped = "a \\" [not a table]"

[[servers]]
name = "a"

[[servers]]
name = "b"
ports = [
  80,  # first
  [443, 8443],
  { tls = true },
]
'''


@pytest.mark.parametrize(
    ("dotted", "line"),
    [
        ("title", 2),
        ('"literal key"', 6),
        ('"quoted.key".inner', 7),
        ("escaped", 8),
        ("servers[0].name", 11),
        ("servers[1]", 13),
        ("servers[1].ports[0]", 16),
        ("servers[1].ports[1][1]", 17),
        ("servers[1].ports[2].tls", 18),
        ("providers.fake", None),
    ],
)
def test_find_line_follows_toml_syntax(dotted, line):
    """Strings, comments, quoted keys and arrays of tables do not confuse find_line."""
    assert find_line(TRICKY, dotted) == line


SECTION_CASES = [
    ("defaults = 5\n", "defaults", "Expected a table, got `int`"),
    ("[defaults.jitter]\nbase_s = 1\n", "defaults.jitter", "unknown key"),
    ("providers = 5\n", "providers", "Expected a table, got `int`"),
    ("[providers]\nbad = 5\n", "providers.bad", "Expected a table, got `int`"),
    ("[tenants.x]\nkeys_env = 'X'\nmodels = { a = 1 }\n", "tenants.x.models", "array"),
]


@pytest.mark.parametrize(("text", "path", "fragment"), SECTION_CASES)
def test_malformed_sections_are_reported(text, path, fragment):
    """A section or entry of the wrong shape is one problem at its own path."""
    assert fragment in the_problem(problems_of(text), path)


def test_tenant_chain_for_an_alias_it_may_not_call():
    """A tenant's chain override for an alias outside its models list is refused."""
    text = BASE + 'models = ["fast"]\n[tenants.t.chains]\nsmart = ["p/large"]\n'
    problem = the_problem(problems_of(text), "tenants.t.chains.smart")
    assert "may not call 'smart'" in problem


def test_repeated_rung_is_reported_at_its_second_place():
    """A rung named twice in one chain is reported where it repeats."""
    text = BASE.replace('["q/small", "@cache"]', '["q/small", "q/small", "@cache"]')
    problem = the_problem(problems_of(text), "models.fast.chain[1]")
    assert "already rung [0]" in problem


def test_toml_error_at_end_of_document_names_the_last_line():
    """An error tomllib places at the end of the document names the last line."""
    problems = problems_of('[server]\nhost = "x"\nhost = "y"')
    assert problems[0].startswith(f"{ORIGIN}:3: invalid TOML: ")


def test_non_utf8_file_is_one_problem(tmp_path):
    """A file that is not UTF-8 text is a ConfigError, not a UnicodeDecodeError."""
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(path)
