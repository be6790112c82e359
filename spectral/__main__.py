"""``python -m spectral`` is the ``spectral`` command."""

from spectral.ops.cli import main

raise SystemExit(main())
