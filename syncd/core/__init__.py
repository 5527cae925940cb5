"""The shared vocabulary: models, status enums, errors, clocks, events. Stdlib only."""
