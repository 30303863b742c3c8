"""Products over real gRPC: create, read, update, delete; access; validation; ETags; events."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import orjson
import pytest
import pytest_asyncio
from google.protobuf import json_format

from mesh.harness import BackingUrls, free_port
from mesh.topology import CATALOG
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.server import serve as serve_catalog
from services.catalog.settings import CatalogSettings
from tests.integration.services.catalog_support import (
    CatalogStack,
    Metadata,
    catalog_client,
    catalog_stack,
    create,
    error_details,
    fields_of,
    new_product,
    running,
    stream_events,
)

Stub = catalog_pb2_grpc.CatalogServiceStub
SQL_NASTIES = (
    "'; DROP TABLE products; --",
    'Robert"); DELETE FROM products WHERE (1=1',
    "100% _pure_ \\ back\\slash",
    "$1 $$ :name ?",
)


@pytest_asyncio.fixture(scope="module")
async def stack(
    backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CatalogStack]:
    async with catalog_stack(backing, tmp_path_factory.mktemp("keys")) as running:
        yield running


@pytest_asyncio.fixture(scope="module")
async def stub(stack: CatalogStack) -> AsyncIterator[Stub]:
    async with catalog_client(stack.address) as client:
        yield client


@pytest.fixture
def admin(stack: CatalogStack) -> Metadata:
    return stack.admin()


async def fails(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is code, caught.value.details()
    return caught.value


async def test_create_then_get_round_trips_every_field(stub: Stub, admin: Metadata) -> None:
    created = await create(stub, admin, attributes={"watts": 60, "tags": ["a", "b"]})
    assert uuid.UUID(created.id)
    assert created.version == 1
    fetched = await stub.GetProduct(catalog_pb2.GetProductRequest(id=created.id))
    assert fetched == created
    assert json_format.MessageToDict(fetched.attributes) == {"watts": 60, "tags": ["a", "b"]}
    assert (fetched.price_cents, fetched.currency, fetched.stock) == (2599, "EUR", 10)


async def test_get_sends_the_etag_as_metadata(stub: Stub, admin: Metadata) -> None:
    created = await create(stub, admin)
    call = stub.GetProduct(catalog_pb2.GetProductRequest(id=created.id))
    await call
    assert ("etag", '"v1"') in tuple(await call.trailing_metadata())


async def test_sql_metacharacters_are_stored_literally(stub: Stub, admin: Metadata) -> None:
    for nasty in SQL_NASTIES:
        created = await create(
            stub,
            admin,
            sku=f"{nasty}{uuid.uuid4().hex[:6]}"[-64:],
            name=nasty,
            description=nasty,
            category=nasty,
            attributes={nasty: nasty},
        )
        fetched = await stub.GetProduct(catalog_pb2.GetProductRequest(id=created.id))
        assert (fetched.name, fetched.description, fetched.category) == (nasty, nasty, nasty)
        assert dict(fetched.attributes) == {nasty: nasty}


async def test_currency_is_normalised_to_upper_case(stub: Stub, admin: Metadata) -> None:
    assert (await create(stub, admin, currency="jpy")).currency == "JPY"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"price_cents": 0}, "priceCents"),
        ({"price_cents": -1}, "priceCents"),
        ({"stock": -1}, "stock"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "XXX"}, "currency"),  # "no currency" has no minor unit
        ({"currency": ""}, "currency"),
        ({"sku": ""}, "sku"),
        ({"sku": "x" * 65}, "sku"),
        ({"name": "   "}, "name"),
        ({"name": "bad\x00name"}, "name"),
        ({"category": ""}, "category"),
        ({"description": "d" * 5001}, "description"),
        ({"attributes": {"blob": "x" * 17_000}}, "attributes"),
    ],
)
async def test_bad_products_are_invalid_naming_the_field(
    stub: Stub, admin: Metadata, overrides: dict[str, object], field: str
) -> None:
    error = await fails(create(stub, admin, **overrides), grpc.StatusCode.INVALID_ARGUMENT)
    assert fields_of(error) == [field]


async def test_every_bad_field_is_reported_at_once(stub: Stub, admin: Metadata) -> None:
    error = await fails(
        create(stub, admin, price_cents=-5, stock=-1, currency="ZZZ"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert set(fields_of(error)) == {"priceCents", "stock", "currency"}


async def test_duplicate_sku_is_already_exists(stub: Stub, admin: Metadata) -> None:
    first = await create(stub, admin)
    error = await fails(create(stub, admin, sku=first.sku), grpc.StatusCode.ALREADY_EXISTS)
    assert fields_of(error) == ["sku"]
    # Deleting the product frees its SKU.
    await stub.DeleteProduct(catalog_pb2.DeleteProductRequest(id=first.id), metadata=admin)
    again = await create(stub, admin, sku=first.sku)
    assert again.id != first.id


async def test_normal_users_and_anonymous_callers_cannot_write(
    stub: Stub, stack: CatalogStack
) -> None:
    product = await create(stub, stack.admin())
    user = stack.user()
    calls = [
        lambda md: stub.CreateProduct(
            catalog_pb2.CreateProductRequest(product=new_product()), metadata=md
        ),
        lambda md: stub.UpdateProduct(
            catalog_pb2.UpdateProductRequest(id=product.id, name="x"), metadata=md
        ),
        lambda md: stub.DeleteProduct(catalog_pb2.DeleteProductRequest(id=product.id), metadata=md),
    ]
    for call in calls:
        await fails(call(user), grpc.StatusCode.PERMISSION_DENIED)
        await fails(call(()), grpc.StatusCode.UNAUTHENTICATED)
        await fails(call((("authorization", "Bearer junk"),)), grpc.StatusCode.UNAUTHENTICATED)
    fetched = await stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
    assert fetched == product


async def test_patch_changes_only_the_given_fields(stub: Stub, admin: Metadata) -> None:
    product = await create(stub, admin)
    call = stub.UpdateProduct(
        catalog_pb2.UpdateProductRequest(id=product.id, price_cents=1999, stock=0),
        metadata=admin,
    )
    updated = await call
    assert ("etag", '"v2"') in tuple(await call.trailing_metadata())
    assert (updated.price_cents, updated.stock, updated.version) == (1999, 0, 2)
    assert (updated.name, updated.sku, updated.currency) == (
        product.name,
        product.sku,
        product.currency,
    )
    assert updated.updated_at.ToDatetime() >= product.updated_at.ToDatetime()
    request = catalog_pb2.UpdateProductRequest(id=product.id)
    request.attributes.update({"new": True})
    replaced = await stub.UpdateProduct(request, metadata=admin)
    assert dict(replaced.attributes) == {"new": True}


async def test_patch_validates_what_it_changes(stub: Stub, admin: Metadata) -> None:
    product = await create(stub, admin)
    for request, field in (
        (catalog_pb2.UpdateProductRequest(id=product.id, price_cents=0), "priceCents"),
        (catalog_pb2.UpdateProductRequest(id=product.id, stock=-3), "stock"),
        (catalog_pb2.UpdateProductRequest(id=product.id, currency="EURO"), "currency"),
        (catalog_pb2.UpdateProductRequest(id=product.id, name=""), "name"),
    ):
        error = await fails(stub.UpdateProduct(request, metadata=admin),
                            grpc.StatusCode.INVALID_ARGUMENT)  # fmt: skip
        assert fields_of(error) == [field]
    await fails(
        stub.UpdateProduct(catalog_pb2.UpdateProductRequest(id=product.id), metadata=admin),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    other = await create(stub, admin)
    error = await fails(
        stub.UpdateProduct(
            catalog_pb2.UpdateProductRequest(id=product.id, sku=other.sku), metadata=admin
        ),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert fields_of(error) == ["sku"]


async def test_stale_if_match_or_version_is_precondition_failed(
    stub: Stub, admin: Metadata
) -> None:
    product = await create(stub, admin)
    await stub.UpdateProduct(
        catalog_pb2.UpdateProductRequest(id=product.id, name="v2"), metadata=admin
    )
    stale_header = (*admin, ("if-match", '"v1"'))
    error = await fails(
        stub.UpdateProduct(
            catalog_pb2.UpdateProductRequest(id=product.id, name="late"), metadata=stale_header
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    details = error_details(error)
    assert (details.reason, dict(details.metadata)) == (
        "PRECONDITION_FAILED",
        {"currentVersion": "2"},
    )
    error = await fails(
        stub.UpdateProduct(
            catalog_pb2.UpdateProductRequest(id=product.id, name="late", version=1),
            metadata=admin,
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert error_details(error).reason == "PRECONDITION_FAILED"
    for weak_or_foreign in ('W/"v2"', '"2"', "v2", '"v9"'):
        await fails(
            stub.UpdateProduct(
                catalog_pb2.UpdateProductRequest(id=product.id, name="no"),
                metadata=(*admin, ("if-match", weak_or_foreign)),
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
    fetched = await stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
    assert (fetched.name, fetched.version) == ("v2", 2)
    # Current tags (in a list, or *) and the current version pass.
    for condition in ('"v1", "v2"', "*"):
        fetched = await stub.UpdateProduct(
            catalog_pb2.UpdateProductRequest(id=product.id, name=f"ok {condition}"),
            metadata=(*admin, ("if-match", condition)),
        )
    current = fetched.version
    done = await stub.UpdateProduct(
        catalog_pb2.UpdateProductRequest(id=product.id, name="by version", version=current),
        metadata=admin,
    )
    assert done.version == current + 1


async def test_delete_with_a_stale_version_is_refused(stub: Stub, admin: Metadata) -> None:
    product = await create(stub, admin)
    await fails(
        stub.DeleteProduct(
            catalog_pb2.DeleteProductRequest(id=product.id),
            metadata=(*admin, ("if-match", '"v7"')),
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    await stub.DeleteProduct(
        catalog_pb2.DeleteProductRequest(id=product.id, version=1), metadata=admin
    )
    await fails(
        stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id)), grpc.StatusCode.NOT_FOUND
    )
    await fails(
        stub.DeleteProduct(catalog_pb2.DeleteProductRequest(id=product.id), metadata=admin),
        grpc.StatusCode.NOT_FOUND,
    )
    await fails(
        stub.UpdateProduct(
            catalog_pb2.UpdateProductRequest(id=product.id, name="ghost"), metadata=admin
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_bad_ids_are_invalid(stub: Stub, admin: Metadata) -> None:
    for bad in ("", "42", "' OR 1=1 --"):
        error = await fails(
            stub.UpdateProduct(catalog_pb2.UpdateProductRequest(id=bad, name="x"), metadata=admin),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert fields_of(error) == ["id"]


async def test_every_change_writes_an_event_that_reaches_the_stream(
    stub: Stub, stack: CatalogStack
) -> None:
    admin = stack.admin()
    product = await create(stub, admin)
    await stub.UpdateProduct(
        catalog_pb2.UpdateProductRequest(id=product.id, price_cents=100), metadata=admin
    )
    await stub.DeleteProduct(catalog_pb2.DeleteProductRequest(id=product.id), metadata=admin)
    connection = await asyncpg.connect(stack.dsn)
    try:
        rows = await connection.fetch(
            "SELECT id, type, payload::text AS payload FROM outbox WHERE subject = $1 ORDER BY seq",
            product.id,
        )
    finally:
        await connection.close()
    assert [r["type"] for r in rows] == ["product.created", "product.updated", "product.deleted"]
    updated = orjson.loads(rows[1]["payload"])
    assert (updated["priceCents"], updated["version"], updated["changed"]) == (
        100,
        2,
        ["priceCents"],
    )
    ids = {str(r["id"]) for r in rows}
    entries = []
    for _ in range(50):
        entries = [e for e in await stream_events(stack) if e["subject"] == product.id]
        if len(entries) == 3:
            break
    assert [e["type"] for e in entries] == ["product.created", "product.updated", "product.deleted"]
    assert {e["id"] for e in entries} == ids
    first = entries[0]
    assert (first["specversion"], first["source"], first["datacontenttype"]) == (
        "1.0",
        "catalog",
        "application/json",
    )
    assert first["time"].endswith("Z")
    assert orjson.loads(first["data"])["sku"] == product.sku


async def test_reads_come_from_the_cache_and_writes_invalidate_it(
    stub: Stub, stack: CatalogStack
) -> None:
    admin = stack.admin()
    product = await create(stub, admin, name="Cached")
    await stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id))  # fills the cache
    # A change made behind the service's back is not seen: the read is served from Redis.
    connection = await asyncpg.connect(stack.dsn)
    try:
        await connection.execute("UPDATE products SET name = 'Sneaky' WHERE id = $1", product.id)
    finally:
        await connection.close()
    fetched = await stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
    assert fetched.name == "Cached"
    # A write through the service invalidates: the next read, from any replica, is fresh.
    await stub.UpdateProduct(
        catalog_pb2.UpdateProductRequest(id=product.id, price_cents=4242), metadata=admin
    )
    async with stack.replica() as other, catalog_client(other) as replica:
        for client in (stub, replica):
            fetched = await client.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
            assert (fetched.name, fetched.price_cents) == ("Sneaky", 4242)


async def test_read_your_write_on_another_replica_every_time(
    stub: Stub, stack: CatalogStack
) -> None:
    admin = stack.admin()
    product = await create(stub, admin)
    async with stack.replica() as other, catalog_client(other) as replica:
        for price in range(100, 130):
            await replica.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
            await stub.UpdateProduct(
                catalog_pb2.UpdateProductRequest(id=product.id, price_cents=price), metadata=admin
            )
            seen = await replica.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
            assert seen.price_cents == price


async def test_without_redis_reads_and_writes_keep_working(stack: CatalogStack) -> None:
    admin = stack.admin()
    async with catalog_client(stack.address) as healthy:
        product = await create(healthy, admin)
        await healthy.GetProduct(catalog_pb2.GetProductRequest(id=product.id))  # cached
        no_redis = dataclasses.replace(stack.stores, redis_url=f"redis://127.0.0.1:{free_port()}/0")
        async with (
            running(
                CATALOG,
                CatalogSettings(stores=no_redis),
                serve_catalog,
                {"MESH_USERS_ADDR": stack.users_address},
            ) as degraded,
            catalog_client(degraded.address) as stub,
        ):
            started = time.perf_counter()
            for _ in range(50):
                fetched = await stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
                assert fetched.id == product.id
            assert time.perf_counter() - started < 2.0  # the circuit skips Redis: no timeouts
            updated = await stub.UpdateProduct(
                catalog_pb2.UpdateProductRequest(id=product.id, stock=3), metadata=admin
            )
            assert updated.stock == 3
            assert (await stub.GetProduct(catalog_pb2.GetProductRequest(id=product.id))).stock == 3
            listed = await stub.ListProducts(catalog_pb2.ListProductsRequest(category="kitchen"))
            assert product.id in {p.id for p in listed.products}
        # The replica that can reach Redis catches up as soon as its outbox relay has seen
        # the degraded replica's event (it invalidates before publishing).
        deadline = time.perf_counter() + 5
        while True:
            seen = await healthy.GetProduct(catalog_pb2.GetProductRequest(id=product.id))
            if seen.stock == 3 or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
        assert seen.stock == 3
