"""Haggle runtime: configuration, the NATS connection, the embedded server and the `haggle` CLI."""
