"""The unix socket: framing, the wire vocabulary, the op registry, sessions, access and watching."""
