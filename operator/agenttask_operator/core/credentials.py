"""Which key a task's LLM requests carry, and which outbound URLs a task may use.

The rule for every credential the operator holds:

- a task's own key comes only from a Secret **in the task's namespace**
  (``spec.model.apiKeySecretRef`` has no namespace field, by design);
- the operator's default key (``OPENAI_API_KEY``) travels **only** to the endpoint it belongs
  to: the operator's ``OPENAI_BASE_URL`` (or the SDK's default), compared on the normalised
  URL (:func:`~.urls.same_endpoint`). A task that names another ``baseURL`` and no Secret runs
  **without a key** (local servers such as llama.cpp or Ollama need none), never with the
  default; status says so (``status.model.credential: NoKey``);
- every URL a task names (``spec.model.baseURL``, ``spec.tools[].http.url``) must match the
  operator's allow-list of hosts when one is set; the operator's own default endpoint always
  does.
"""

from __future__ import annotations

from dataclasses import dataclass

from agenttask_operator.core.urls import host_allowed, redact, same_endpoint
from agenttask_operator.models import (
    AgentTaskSpec,
    Credential,
    ModelAccess,
    ModelSpec,
    OperatorPolicy,
    SecretKeyRef,
)


@dataclass(frozen=True)
class Access:
    """How one LLM request is made: the URL and which key (``missing``: none to be had)."""

    base_url: str
    credential: Credential
    secret: SecretKeyRef | None = None
    missing: bool = False

    def status(self) -> ModelAccess:
        """What ``status.model`` says about it."""
        return ModelAccess(base_url=redact(self.base_url), credential=self.credential)


def model_access(model: ModelSpec, policy: OperatorPolicy) -> Access:
    """The endpoint and credential of ``model``'s requests under ``policy``."""
    url = model.base_url or policy.default_base_url
    if model.api_key_secret_ref is not None:
        return Access(url, "Secret", model.api_key_secret_ref)
    if model.base_url is None or same_endpoint(model.base_url, policy.default_base_url):
        return Access(url, "OperatorDefault", missing=not policy.default_key)
    return Access(url, "NoKey")


def refused_urls(
    spec: AgentTaskSpec, policy: OperatorPolicy, model: ModelSpec | None = None
) -> list[tuple[str, str]]:
    """``(field, url)`` of every URL in ``spec`` that the allow-list refuses; ``model`` is the
    model requests use, when it comes from an AgentModel (``spec.model.modelRef``).
    """  # noqa: D205
    if not policy.allowed_hosts:
        return []
    ref = spec.model.model_ref
    if ref is not None:
        where = f"AgentModel {ref.name} baseURL"
        named = [(where, model.base_url if model is not None else None)]
    else:
        named = [("spec.model.baseURL", spec.model.base_url)]
    named += [
        (f"spec.tools[{i}].http.url", t.http.url if t.http else None)
        for i, t in enumerate(spec.tools)
    ]
    return [
        (field, redact(url))
        for field, url in named
        if url is not None
        and not same_endpoint(url, policy.default_base_url)
        and not host_allowed(url, policy.allowed_hosts)
    ]
