"""Entry point of ``python -m trainer`` (see :mod:`trainer.cli`)."""

from trainer.cli import main

raise SystemExit(main())
