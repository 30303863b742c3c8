"""The HTTP/JSON + WebSocket gateway in front of the mesh's services (`gateway.app`)."""
