"""The catalog service: products, categories and inventory (gRPC, PostgreSQL `catalog`)."""
