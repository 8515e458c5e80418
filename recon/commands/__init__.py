"""Subcommands of the ``recon`` CLI; see ``recon.cli``."""
