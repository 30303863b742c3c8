"""The analytics service: event ingestion and queries (gRPC, MongoDB database `analytics`)."""
