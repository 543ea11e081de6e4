"""agnes-activity: a live personal activity service for analysts who work with Claude Code."""

__version__ = "0.1.0"
