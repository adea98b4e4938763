"""``python -m gitquorum.plugin``: the plugin without its installed program."""

import sys

from gitquorum.plugin import cli

sys.exit(cli.main())
