"""The configuration: frozen dataclasses, strict TOML readers, routes, reload diffs."""
