"""One exception hierarchy, so the CLI can print a user's mistake as one line and exit 2.

Every message says what was wrong (user input quoted with ``!r``), what is valid, and how to fix it.
"""

from __future__ import annotations


class TokenbenchError(Exception):
    """Base class for every error tokenbench raises on purpose (bad input, bad plugin, bad config)."""


class UnknownNameError(TokenbenchError, KeyError):
    """A method, model or task name that no registry holds."""

    def __str__(self) -> str:  # KeyError would quote the message; show it as written
        return str(self.args[0]) if self.args else ""


class PluginValidationError(TokenbenchError):
    """A method, model or task that breaks the plugin contract; raised when it is registered."""


class ConfigError(TokenbenchError, ValueError):
    """A bad parameter: a method option, a budget, a device, a path."""


class IncompatibleError(TokenbenchError):
    """A method/model pair that cannot work together (for example a need the adapter cannot provide)."""
