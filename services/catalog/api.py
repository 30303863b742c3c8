"""gRPC transport of the catalog service."""

from __future__ import annotations

from typing import Any

import grpc

from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.service import CatalogService
from services.catalog.store import ProductRecord


def product_to_proto(product: ProductRecord) -> catalog_pb2.Product:
    message = catalog_pb2.Product(
        id=str(product.id),
        sku=product.sku,
        name=product.name,
        description=product.description,
        price_cents=product.price_cents,
        currency=product.currency,
        category=product.category,
        stock=product.stock,
        version=product.version,
    )
    message.attributes.update(product.attributes)
    message.created_at.FromDatetime(product.created_at)
    message.updated_at.FromDatetime(product.updated_at)
    return message


class CatalogApi(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, service: CatalogService) -> None:
        self._service = service

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> catalog_pb2.Product:
        return product_to_proto(await self._service.get_product(request.id))
