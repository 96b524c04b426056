"""`orchestrator demo` (registered on the `orchestrator` app when the CLI starts)."""
