"""Lets ``python -m gitquorum`` run the command line, as the console script does."""

import sys

import gitquorum.cli

sys.exit(gitquorum.cli.main())
