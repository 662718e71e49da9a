"""Regenerate ``openai-openapi.yaml`` here: the schemas the tests use, with their refs.

Usage: ``python tests/specs/extract.py ../shared/specs/openai-openapi.yaml``. The
output is JSON (a subset of YAML), so the test helper loads it with its YAML loader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

WANTED = (
    "CreateChatCompletionRequest",
    "CreateChatCompletionResponse",
    "CreateChatCompletionStreamResponse",
    "CreateEmbeddingRequest",
    "CreateEmbeddingResponse",
    "ErrorResponse",
    "ListModelsResponse",
    "Model",
)
PREFIX = "#/components/schemas/"


def closure(schemas: dict[str, Any]) -> set[str]:
    """Return the wanted schema names and every schema they reference."""
    seen: set[str] = set()
    todo: list[Any] = []
    for name in WANTED:
        seen.add(name)
        todo.append(schemas[name])
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(PREFIX):
                name = ref.removeprefix(PREFIX)
                if name not in seen:
                    seen.add(name)
                    todo.append(schemas[name])
            todo.extend(v for k, v in node.items() if k != "$ref")
        elif isinstance(node, list):
            todo.extend(node)
    return seen


def main(source: str) -> None:
    """Write the subset beside this script."""
    spec = yaml.load(Path(source).read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    schemas = spec["components"]["schemas"]
    info = dict(spec["info"])
    info["x-fusebox-note"] = (
        "Subset of components.schemas from openai/openai-openapi openapi.yaml "
        "(MIT licence): the schemas the tests validate against and their $ref "
        "closure. Regenerate with tests/specs/extract.py."
    )
    keep = sorted(closure(schemas))
    out = {
        "openapi": spec["openapi"],
        "info": {k: info[k] for k in ("title", "version", "x-fusebox-note")},
        "components": {"schemas": {k: schemas[k] for k in keep}},
    }
    target = Path(__file__).with_name("openai-openapi.yaml")
    target.write_text(json.dumps(out, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1])
