"""The durable journal: append-only, checksummed, hash-chained segments of msgpack records."""
