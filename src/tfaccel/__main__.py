"""``python -m tfaccel``: the ``tfaccel`` command (see :mod:`tfaccel.cli`)."""

from tfaccel.cli import main

raise SystemExit(main())
