"""Effects: everything that touches the world (Kubernetes API, LLM, tools, events, faults)."""
