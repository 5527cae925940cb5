"""The verbs an operator has (submit, cancel, explain), shared by ops, schedules and the web."""
