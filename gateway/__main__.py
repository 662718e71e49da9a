"""``python -m gateway``: the same CLI as the ``fusebox`` command."""

from gateway.cli import main

raise SystemExit(main())
