"""Genesis event orchestrator: command strategies, capability handlers, outbox."""

__version__ = "0.1.0"
