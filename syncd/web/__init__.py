"""`syncd web`: the dashboard, /metrics and /healthz. It talks to the daemon only through
the control socket (syncd.ctl.client), as the user it runs as, and keeps no state of its own."""
