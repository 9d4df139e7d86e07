"""``python -m fastegnn_md.cli``: the same as the ``fastegnn-md`` command."""

import sys

from . import main

sys.exit(main())
