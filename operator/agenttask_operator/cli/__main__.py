"""``python -m agenttask_operator.cli``: the same as ``kubectl-agenttask``."""

import sys

from agenttask_operator.cli.main import main

sys.exit(main())
