"""The base of every model: camelCase aliases, immutable, unknown fields ignored."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class Model(BaseModel):
    """Immutable model with camelCase aliases; dumps by alias and drops unset values."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore"
    )

    def to_api(self) -> dict[str, Any]:
        """Return the Kubernetes (camelCase, JSON-compatible) form, without None values."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


Time = Annotated[datetime, AfterValidator(_aware)]
"""A timestamp; one written without a timezone is read as UTC (never naive)."""
