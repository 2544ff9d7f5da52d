"""The till's journal online to head office over MQTT (docs/FLEET.md): the till's relay, head office's
ingest, and the messages between them."""
