"""Running tasks: child processes, the dispatcher, the monitor, crash reconciliation."""
