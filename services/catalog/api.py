"""gRPC transport of the catalog service: protos to domain calls and back.

Entity tags travel as metadata: responses carrying a product send ``etag`` in their
trailing metadata (set without an extra write; the gateway's ETag header and its
If-None-Match check); UpdateProduct and DeleteProduct read ``if-match`` from the request
metadata (the gateway forwards the If-Match header there).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Final

import grpc
from google.protobuf import empty_pb2, json_format, timestamp_pb2

from mesh.auth.identity import current_caller
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.records import (
    CategoryCount,
    NewProduct,
    ProductChanges,
    ProductRecord,
    ReservationRecord,
)
from services.catalog.service import CatalogService, ListRequest, etag

ETAG_METADATA: Final = "etag"
IF_MATCH_METADATA: Final = "if-match"

Context = grpc.aio.ServicerContext[Any, Any]


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
    _set_time(message.created_at, product.created_at)
    _set_time(message.updated_at, product.updated_at)
    return message


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _set_time(target: timestamp_pb2.Timestamp, value: datetime) -> None:
    """`Timestamp.FromDatetime` for an aware datetime, without its calendar arithmetic."""
    seconds, micros = divmod((value - _EPOCH) // _MICROSECOND, 1_000_000)
    target.seconds = seconds
    target.nanos = micros * 1000


def reservation_to_proto(reservation: ReservationRecord) -> catalog_pb2.Reservation:
    message = catalog_pb2.Reservation(
        reservation_id=str(reservation.id),
        product_id=str(reservation.product_id),
        quantity=reservation.quantity,
        remaining_stock=reservation.remaining_stock,
        status=reservation.status,
    )
    _set_time(message.created_at, reservation.created_at)
    if reservation.released_at is not None:
        _set_time(message.released_at, reservation.released_at)
    return message


def category_to_proto(category: CategoryCount) -> catalog_pb2.Category:
    return catalog_pb2.Category(name=category.name, product_count=category.product_count)


def _struct(message: Any) -> dict[str, Any]:
    document: dict[str, Any] = json_format.MessageToDict(message)
    return document


def _metadata(context: Context, key: str) -> str | None:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value if isinstance(value, str) else value.decode(errors="replace")
    return None


def _send_etag(context: Context, product: ProductRecord) -> None:
    context.set_trailing_metadata(((ETAG_METADATA, etag(product.version)),))


class CatalogApi(catalog_pb2_grpc.CatalogServiceServicer):
    def __init__(self, service: CatalogService) -> None:
        self._service = service

    async def ListProducts(
        self, request: catalog_pb2.ListProductsRequest, context: Context
    ) -> catalog_pb2.ListProductsResponse:
        def optional(name: Any) -> Any:
            return getattr(request, name) if request.HasField(name) else None

        page = await self._service.list_products(
            ListRequest(
                category=request.category,
                q=request.q,
                min_price_cents=optional("min_price_cents"),
                max_price_cents=optional("max_price_cents"),
                in_stock=optional("in_stock"),
                order_by=request.order_by,
                page_size=optional("page_size"),
                page_token=request.page_token,
            )
        )
        return catalog_pb2.ListProductsResponse(
            products=[product_to_proto(p) for p in page.products],
            next_page_token=page.next_page_token,
        )

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: Context
    ) -> catalog_pb2.Product:
        product = await self._service.get_product(request.id)
        _send_etag(context, product)
        return product_to_proto(product)

    async def CreateProduct(
        self, request: catalog_pb2.CreateProductRequest, context: Context
    ) -> catalog_pb2.Product:
        given = request.product
        product = await self._service.create_product(
            NewProduct(
                sku=given.sku,
                name=given.name,
                description=given.description,
                price_cents=given.price_cents,
                currency=given.currency,
                category=given.category,
                attributes=_struct(given.attributes),
                stock=given.stock,
            )
        )
        _send_etag(context, product)
        return product_to_proto(product)

    async def UpdateProduct(
        self, request: catalog_pb2.UpdateProductRequest, context: Context
    ) -> catalog_pb2.Product:
        def optional(name: Any) -> Any:
            return getattr(request, name) if request.HasField(name) else None

        changes = ProductChanges(
            sku=optional("sku"),
            name=optional("name"),
            description=optional("description"),
            price_cents=optional("price_cents"),
            currency=optional("currency"),
            category=optional("category"),
            attributes=_struct(request.attributes) if request.HasField("attributes") else None,
            stock=optional("stock"),
        )
        product = await self._service.update_product(
            request.id,
            changes,
            version=optional("version"),
            if_match=_metadata(context, IF_MATCH_METADATA),
        )
        _send_etag(context, product)
        return product_to_proto(product)

    async def DeleteProduct(
        self, request: catalog_pb2.DeleteProductRequest, context: Context
    ) -> empty_pb2.Empty:
        await self._service.delete_product(
            request.id,
            version=request.version if request.HasField("version") else None,
            if_match=_metadata(context, IF_MATCH_METADATA),
        )
        return empty_pb2.Empty()

    async def ListCategories(
        self, request: catalog_pb2.ListCategoriesRequest, context: Context
    ) -> catalog_pb2.ListCategoriesResponse:
        categories = await self._service.categories()
        return catalog_pb2.ListCategoriesResponse(
            categories=[category_to_proto(c) for c in categories]
        )

    async def ReserveProduct(
        self, request: catalog_pb2.ReserveProductRequest, context: Context
    ) -> catalog_pb2.Reservation:
        caller = current_caller()
        reservation = await self._service.reserve(
            caller.user_id, request.id, request.quantity, request.idempotency_key
        )
        return reservation_to_proto(reservation)

    async def ReleaseReservation(
        self, request: catalog_pb2.ReleaseReservationRequest, context: Context
    ) -> catalog_pb2.Reservation:
        caller = current_caller()
        reservation = await self._service.release(
            request.id, caller.user_id, is_admin=caller.is_admin
        )
        return reservation_to_proto(reservation)
