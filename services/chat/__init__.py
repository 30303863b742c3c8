"""The chat service: real-time rooms over WebSocket (aiohttp, MongoDB `chat`, Redis fan-out)."""
