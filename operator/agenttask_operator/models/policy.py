"""What the operator offers every task, from its flags and environment (not from the task).

``decide`` reads it with the task, so that the rules that protect the operator's own
credentials and network — where its default key may go, which hosts tasks may reach, which
namespaces may use the built-in tools — are pure decisions, tested like the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

SDK_DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the openai SDK's default endpoint


@dataclass(frozen=True)
class OperatorPolicy:
    """The operator's default model endpoint and key, egress allow-list, built-in scope."""

    default_base_url: str = SDK_DEFAULT_BASE_URL
    default_key: bool = False  # whether the operator holds a default key (OPENAI_API_KEY)
    allowed_hosts: tuple[str, ...] = ()  # empty: every host
    builtin_namespaces: tuple[str, ...] = ()  # empty: built-in tools in every namespace

    def builtins_allowed(self, namespace: str) -> bool:
        """Whether tasks of ``namespace`` may use the operator's built-in tools."""
        return not self.builtin_namespaces or namespace in self.builtin_namespaces
