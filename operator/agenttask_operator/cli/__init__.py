"""``kubectl agenttask``: read tasks, steps and transcripts; decide on calls; retry tasks.

Layers: ``main`` (flags, errors) → ``commands`` (one function per subcommand) → ``client``
(the API, configured like kubectl; the transcript read with the operator's own store) and the
pure ``render`` (what is printed) and ``objects`` (what is created). The plugin may use
``effects``, ``core`` and ``models``, never ``handlers`` or kopf (see the import-linter
contracts in pyproject.toml).
"""
