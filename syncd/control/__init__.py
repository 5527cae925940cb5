"""The control socket: framing, authorization, connections and the op handlers."""
