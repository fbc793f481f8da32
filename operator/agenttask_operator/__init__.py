"""AgentTask operator."""
