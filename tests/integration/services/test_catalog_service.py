"""The catalog service over real gRPC against real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import orjson
import pytest

from mesh.backing_settings import StoreUrls
from mesh.errors import details_from_trailers
from mesh.topology import CATALOG
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.server import serve
from services.catalog.settings import CatalogSettings
from tests.integration.services.conftest import RunningService, run_service


async def insert_product(dsn: str, **overrides: object) -> uuid.UUID:
    product_id = uuid.uuid4()
    values = {
        "sku": f"SKU-{product_id.hex[:8]}",
        "name": "Tea pot",
        "description": "Cast iron",
        "price_cents": 2599,
        "currency": "EUR",
        "category": "kitchen",
        "attributes": {"colour": "black", "litres": 1.2},
        "stock": 7,
        **overrides,
    }
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO products (id, sku, name, description, price_cents, currency, category,"
            " attributes, stock) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)",
            product_id,
            values["sku"],
            values["name"],
            values["description"],
            values["price_cents"],
            values["currency"],
            values["category"],
            orjson.dumps(values["attributes"]).decode(),
            values["stock"],
        )
    finally:
        await connection.close()
    return product_id


@pytest.fixture
async def catalog(stores: StoreUrls) -> AsyncIterator[RunningService]:
    async with run_service(CATALOG, CatalogSettings(stores=stores), serve, stores) as running:
        yield running


@pytest.fixture
async def stub(catalog: RunningService) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceStub]:
    async with grpc.aio.insecure_channel(catalog.address) as channel:
        yield catalog_pb2_grpc.CatalogServiceStub(channel)


async def test_get_product_reads_the_row(
    stub: catalog_pb2_grpc.CatalogServiceStub, catalog: RunningService
) -> None:
    product_id = await insert_product(catalog.stores.postgres_for("catalog"))
    product = await stub.GetProduct(catalog_pb2.GetProductRequest(id=str(product_id)))
    assert product.id == str(product_id)
    assert (product.name, product.price_cents, product.currency, product.stock) == (
        "Tea pot",
        2599,
        "EUR",
        7,
    )
    assert dict(product.attributes) == {"colour": "black", "litres": 1.2}
    assert product.version == 1


async def test_unknown_and_deleted_products_are_not_found(
    stub: catalog_pb2_grpc.CatalogServiceStub, catalog: RunningService
) -> None:
    dsn = catalog.stores.postgres_for("catalog")
    deleted = await insert_product(dsn)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("UPDATE products SET deleted_at = now() WHERE id = $1", deleted)
    finally:
        await connection.close()
    for product_id in (uuid.uuid4(), deleted):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetProduct(catalog_pb2.GetProductRequest(id=str(product_id)))
        assert caught.value.code() is grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("bad_id", ["", "42", "' OR 1=1 --", "x" * 1000])
async def test_malformed_id_is_invalid_argument(
    stub: catalog_pb2_grpc.CatalogServiceStub, bad_id: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetProduct(catalog_pb2.GetProductRequest(id=bad_id))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    fields = details_from_trailers(caught.value.trailing_metadata()).field_errors
    assert [f.field for f in fields] == ["id"]
