"""``python -m spectral`` is the ``spectral`` command."""

from spectral.cli import main

raise SystemExit(main())
