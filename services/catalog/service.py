"""The catalog domain, independent of transport and storage."""

from __future__ import annotations

import uuid

from mesh.errors import FieldError, NotFound, invalid
from services.catalog.store import ProductRecord, ProductStore


def parse_product_id(value: str, field: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid([FieldError(field, "must be a product id (a UUID)")]) from None


class CatalogService:
    def __init__(self, store: ProductStore) -> None:
        self._store = store

    async def get_product(self, product_id: str) -> ProductRecord:
        product = await self._store.get(parse_product_id(product_id))
        if product is None:
            raise NotFound(f"no product with id {product_id}")
        return product
