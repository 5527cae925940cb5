"""`syncd web`: the dashboard, /metrics and /healthz, a client of the control socket only."""
