"""Validate JSON against component schemas of the OpenAI OpenAPI spec (test helper).

``validate("CreateChatCompletionResponse", obj)`` checks ``obj`` with JSON Schema
2020-12, ``$ref``s resolved inside the spec. The 2.9 MB spec is parsed once per
session. OpenAPI 3.0's ``nullable: true``, which the 3.1 spec still mixes with
``anyOf [..., {type: null}]``, is rewritten on load as "this schema, or null".

The spec is looked up in ``$FUSEBOX_OPENAI_SPEC``, then ``specs/`` beside the
tests, then ``shared/specs/`` next to the checkout; tests are skipped (with the
reason) when it is nowhere.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Final

import jsonschema
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT202012

_SPEC_NAME: Final = "openai-openapi.yaml"
_SPEC_URI: Final = "urn:fusebox:openai-openapi"
_ROOT: Final = Path(__file__).resolve().parents[1]


def _spec_path() -> Path | None:
    env = os.environ.get("FUSEBOX_OPENAI_SPEC")
    candidates = [Path(env)] if env else []
    candidates += [
        _ROOT / "tests" / "specs" / _SPEC_NAME,
        _ROOT.parent / "shared" / "specs" / _SPEC_NAME,
    ]
    return next((path for path in candidates if path.is_file()), None)


def _without_nullable(node: Any) -> Any:
    """Rewrite every ``nullable: true`` schema as ``anyOf [schema, {type: null}]``."""
    if isinstance(node, list):
        return [_without_nullable(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _without_nullable(value) for key, value in node.items()}
    nullable = out.get("nullable")
    if not isinstance(nullable, bool):
        return out  # absent, or a property that happens to be called "nullable"
    del out["nullable"]
    if not nullable:
        return out
    # Wrapping works for every shape: a type, an enum, a $ref with siblings, an
    # anyOf/oneOf that already admits null (then the extra branch is harmless).
    return {"anyOf": [out, {"type": "null"}]}


@functools.cache
def _registry() -> Registry[Any]:
    path = _spec_path()
    if path is None:
        pytest.skip(f"the OpenAI OpenAPI spec ({_SPEC_NAME}) is not available")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as handle:
        spec = yaml.load(handle, Loader=loader)  # noqa: S506 - a safe loader
    resource = DRAFT202012.create_resource(_without_nullable(spec))
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, resource)
    return registry


@functools.cache
def _validator(schema_name: str) -> Any:
    registry = _registry()
    schemas = registry.contents(_SPEC_URI)["components"]["schemas"]
    if schema_name not in schemas:
        msg = f"no schema {schema_name!r} in the OpenAI spec"
        raise KeyError(msg)
    ref = {"$ref": f"{_SPEC_URI}#/components/schemas/{schema_name}"}
    return jsonschema.Draft202012Validator(ref, registry=registry)


def validate(schema_name: str, instance: object) -> None:
    """Assert that ``instance`` is valid for the spec's ``components.schemas[name]``.

    Raises:
        jsonschema.ValidationError: The best-matching error, with its path.
        KeyError: The spec has no schema of that name.
    """
    validator = _validator(schema_name)
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is not None:
        raise error
