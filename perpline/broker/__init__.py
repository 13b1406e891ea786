"""The broker: the embedded Tansu launcher and topic management (also used against Redpanda)."""
