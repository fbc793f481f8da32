"""``kubectl agenttask``: read tasks, steps and transcripts; decide on calls; retry tasks.

- ``main``: the command line (kubectl's flags) and kubectl-style errors;
- ``commands``: one function per subcommand; ``follow``: ``logs -f``;
- ``client``: the API, configured like kubectl, with the transcript read by the operator's own
  store; ``output``: where and in which format things are written;
- pure: ``render`` (tables: tasks, steps), ``logview`` (the readable transcript) and
  ``objects`` (the approvals and tasks it creates).

The plugin may use ``effects``, ``core`` and ``models``, never ``handlers`` or kopf (the
import-linter contracts in pyproject.toml).
"""
