"""The `syncd` daemon: composition root, start-up, shutdown, systemd notify, check."""
