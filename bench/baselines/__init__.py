"""The ceilings the mesh is measured against, in the same run: a bare aiohttp handler,
nginx proxying to one, and a bare aiohttp WebSocket broadcast."""
