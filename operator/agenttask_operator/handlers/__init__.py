"""kopf handlers: parse objects into models, call the core, apply effects. Nothing else."""

from __future__ import annotations

import logging
from typing import Any

import kopf

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "agenttask.dev", "v1alpha1", "agenttasks"


async def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    log.info("agenttask-operator started; watching %s.%s/%s", PLURAL, GROUP, VERSION)


def register() -> None:
    """Register the handlers with kopf's default registry."""
    kopf.on.startup()(_startup)
