"""The op handlers, each declared once with its arguments, flags and syncctl command."""
