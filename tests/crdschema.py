"""The AgentTask CRD's spec schema, as tests read it (the schema in crds/ is the contract)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

CRD_FILE = Path(__file__).resolve().parents[1] / "crds" / "agenttask.dev_agenttasks.yaml"
CRD: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
SPEC_SCHEMA: dict[str, Any] = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "spec"
]


def numbers_of(schema: Mapping[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """``(path, schema)`` of every number in ``schema``; ``[]`` stands for any item of a list."""
    kind = schema.get("type")
    if kind in ("integer", "number"):
        yield path, dict(schema)
    elif kind == "object":
        for key, sub in (schema.get("properties") or {}).items():
            yield from numbers_of(sub, f"{path}.{key}" if path else key)
    elif kind == "array":
        yield from numbers_of(schema["items"], f"{path}[]")
