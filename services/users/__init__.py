"""The users service: accounts and credentials (gRPC, PostgreSQL database `users`)."""
