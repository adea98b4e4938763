"""The subcommands of ``gitquorum``, one module each; see ``gitquorum.cli``."""
