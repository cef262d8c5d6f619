"""``python -m tfaccel.native``: build the OpenVINO op library now (``import tfaccel`` also does)."""

import sys

from tfaccel.native import main

sys.exit(main())
