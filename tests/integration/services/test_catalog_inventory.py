"""Reservations over real gRPC: atomic stock, idempotency keys, releases, events."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import grpc
import orjson
import pytest
import pytest_asyncio

from mesh.harness import BackingUrls
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from tests.integration.services.catalog_support import (
    CatalogStack,
    Metadata,
    catalog_client,
    catalog_stack,
    create,
    error_details,
    fields_of,
)

Stub = catalog_pb2_grpc.CatalogServiceStub


@pytest_asyncio.fixture(scope="module")
async def stack(
    backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CatalogStack]:
    async with catalog_stack(backing, tmp_path_factory.mktemp("keys"), db_pool_size=20) as s:
        yield s


@pytest_asyncio.fixture(scope="module")
async def stub(stack: CatalogStack) -> AsyncIterator[Stub]:
    async with catalog_client(stack.address) as client:
        yield client


def reserve(
    stub: Stub, product_id: str, quantity: int, key: str, metadata: Metadata
) -> grpc.aio.UnaryUnaryCall[catalog_pb2.ReserveProductRequest, catalog_pb2.Reservation]:
    return stub.ReserveProduct(
        catalog_pb2.ReserveProductRequest(id=product_id, quantity=quantity, idempotency_key=key),
        metadata=metadata,
    )


async def fails(call: object, code: grpc.StatusCode) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() is code, caught.value.details()
    return caught.value


async def stock_of(stub: Stub, product_id: str) -> int:
    return (await stub.GetProduct(catalog_pb2.GetProductRequest(id=product_id))).stock


async def test_reserve_takes_stock_and_release_returns_it(stub: Stub, stack: CatalogStack) -> None:
    product = await create(stub, stack.admin(), stock=10)
    assert await stock_of(stub, product.id) == 10  # cached now
    user = stack.user()
    reservation = await reserve(stub, product.id, 3, "k1", user)
    assert (reservation.product_id, reservation.quantity, reservation.remaining_stock) == (
        product.id,
        3,
        7,
    )
    assert reservation.status == "active"
    assert uuid.UUID(reservation.reservation_id)
    assert await stock_of(stub, product.id) == 7  # the cache was invalidated
    released = await stub.ReleaseReservation(
        catalog_pb2.ReleaseReservationRequest(id=reservation.reservation_id), metadata=user
    )
    assert (released.status, released.remaining_stock) == ("released", 10)
    assert released.released_at.seconds > 0
    assert await stock_of(stub, product.id) == 10
    # Releasing again changes nothing and answers the same.
    again = await stub.ReleaseReservation(
        catalog_pb2.ReleaseReservationRequest(id=reservation.reservation_id), metadata=user
    )
    assert again == released
    assert await stock_of(stub, product.id) == 10


async def test_same_key_replays_the_first_answer(stub: Stub, stack: CatalogStack) -> None:
    product = await create(stub, stack.admin(), stock=5)
    user = stack.user()
    first = await reserve(stub, product.id, 2, "order-42", user)
    await reserve(stub, product.id, 1, "order-43", user)  # moves the stock on
    replay = await reserve(stub, product.id, 2, "order-42", user)
    assert replay == first  # same id, same remainingStock (3), applied once
    assert await stock_of(stub, product.id) == 2
    # Another user's identical key is another reservation.
    other = await reserve(stub, product.id, 2, "order-42", stack.user())
    assert other.reservation_id != first.reservation_id
    assert await stock_of(stub, product.id) == 0
    # The replay holds even when the stock is gone now.
    assert await reserve(stub, product.id, 2, "order-42", user) == first


async def test_same_key_with_another_body_is_refused(stub: Stub, stack: CatalogStack) -> None:
    admin = stack.admin()
    product, other = await create(stub, admin, stock=5), await create(stub, admin, stock=5)
    user = stack.user()
    await reserve(stub, product.id, 1, "key", user)
    for product_id, quantity in ((product.id, 2), (other.id, 1)):
        error = await fails(
            reserve(stub, product_id, quantity, "key", user), grpc.StatusCode.FAILED_PRECONDITION
        )
        assert error_details(error).reason == "IDEMPOTENCY_KEY_REUSED"
        assert fields_of(error) == ["idempotencyKey"]
    assert await stock_of(stub, product.id) == 4
    assert await stock_of(stub, other.id) == 5


async def test_concurrent_retries_of_one_key_apply_once(stub: Stub, stack: CatalogStack) -> None:
    product = await create(stub, stack.admin(), stock=100)
    user = stack.user()
    answers = await asyncio.gather(*(reserve(stub, product.id, 3, "dup", user) for _ in range(20)))
    assert len({a.reservation_id for a in answers}) == 1
    assert {a.remaining_stock for a in answers} == {97}
    assert await stock_of(stub, product.id) == 97


async def test_more_than_the_stock_is_aborted_with_the_stock_left(
    stub: Stub, stack: CatalogStack
) -> None:
    product = await create(stub, stack.admin(), stock=4)
    user = stack.user()
    error = await fails(reserve(stub, product.id, 5, "big", user), grpc.StatusCode.ABORTED)
    details = error_details(error)
    assert details.reason == "INSUFFICIENT_STOCK"
    assert dict(details.metadata) == {"availableStock": "4"}
    assert "only 4" in (error.details() or "")
    # A failed attempt is not recorded: the same key may try again with what is left.
    assert (await reserve(stub, product.id, 4, "big-2", user)).remaining_stock == 0
    error = await fails(reserve(stub, product.id, 1, "more", user), grpc.StatusCode.ABORTED)
    assert dict(error_details(error).metadata) == {"availableStock": "0"}


async def test_deleted_or_unknown_products_are_not_found(stub: Stub, stack: CatalogStack) -> None:
    admin = stack.admin()
    product = await create(stub, admin, stock=4)
    user = stack.user()
    kept = await reserve(stub, product.id, 1, "before-delete", user)
    await stub.DeleteProduct(catalog_pb2.DeleteProductRequest(id=product.id), metadata=admin)
    await fails(reserve(stub, product.id, 1, "after", user), grpc.StatusCode.NOT_FOUND)
    await fails(reserve(stub, str(uuid.uuid4()), 1, "nothing", user), grpc.StatusCode.NOT_FOUND)
    # A reservation made before the delete can still be released.
    released = await stub.ReleaseReservation(
        catalog_pb2.ReleaseReservationRequest(id=kept.reservation_id), metadata=user
    )
    assert released.status == "released"


async def test_bad_reservations_are_invalid_or_unauthenticated(
    stub: Stub, stack: CatalogStack
) -> None:
    product = await create(stub, stack.admin(), stock=4)
    user = stack.user()
    for quantity, key, field in ((0, "k", "quantity"), (-1, "k", "quantity"),
                                 (1001, "k", "quantity"), (1, "", "idempotencyKey"),
                                 (1, "x" * 129, "idempotencyKey"),
                                 (1, "tab\there", "idempotencyKey")):  # fmt: skip
        error = await fails(
            reserve(stub, product.id, quantity, key, user), grpc.StatusCode.INVALID_ARGUMENT
        )
        assert fields_of(error) == [field]
    error = await fails(reserve(stub, "nope", 1, "k", user), grpc.StatusCode.INVALID_ARGUMENT)
    assert fields_of(error) == ["id"]
    await fails(reserve(stub, product.id, 1, "k", ()), grpc.StatusCode.UNAUTHENTICATED)
    assert await stock_of(stub, product.id) == 4
    # SQL metacharacters in the key are just characters.
    ok = await reserve(stub, product.id, 1, "'; DROP TABLE reservations; --", user)
    assert ok.remaining_stock == 3


async def test_only_the_owner_or_an_admin_releases(stub: Stub, stack: CatalogStack) -> None:
    product = await create(stub, stack.admin(), stock=4)
    owner = stack.user()
    reservation = await reserve(stub, product.id, 2, "mine", owner)
    request = catalog_pb2.ReleaseReservationRequest(id=reservation.reservation_id)
    await fails(stub.ReleaseReservation(request, metadata=stack.user()), grpc.StatusCode.NOT_FOUND)
    await fails(
        stub.ReleaseReservation(
            catalog_pb2.ReleaseReservationRequest(id=str(uuid.uuid4())), metadata=owner
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    released = await stub.ReleaseReservation(request, metadata=stack.admin())
    assert released.remaining_stock == 4


async def test_two_hundred_concurrent_reservations_of_fifty(
    stub: Stub, stack: CatalogStack
) -> None:
    product = await create(stub, stack.admin(), stock=50)
    outcomes = await asyncio.gather(
        *(reserve(stub, product.id, 1, f"c{i}", stack.user()) for i in range(200)),
        return_exceptions=True,
    )
    won = [o for o in outcomes if isinstance(o, catalog_pb2.Reservation)]
    lost = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(won) == 50
    assert len(lost) == 150
    assert {e.code() for e in lost} == {grpc.StatusCode.ABORTED}
    assert sorted(r.remaining_stock for r in won) == list(range(50))
    assert await stock_of(stub, product.id) == 0
    connection = await asyncpg.connect(stack.dsn)
    try:
        assert (
            await connection.fetchval(
                "SELECT stock FROM products WHERE id = $1", uuid.UUID(product.id)
            )
            == 0
        )
        assert (
            await connection.fetchval(
                "SELECT count(*) FROM reservations WHERE product_id = $1", uuid.UUID(product.id)
            )
            == 50
        )
    finally:
        await connection.close()


async def test_reservations_emit_inventory_events(stub: Stub, stack: CatalogStack) -> None:
    product = await create(stub, stack.admin(), stock=3)
    user_id = str(uuid.uuid4())
    user = stack.user(user_id)
    reservation = await reserve(stub, product.id, 2, "ev", user)
    await stub.ReleaseReservation(
        catalog_pb2.ReleaseReservationRequest(id=reservation.reservation_id), metadata=user
    )
    connection = await asyncpg.connect(stack.dsn)
    try:
        rows = await connection.fetch(
            "SELECT type, payload::text AS payload FROM outbox WHERE subject = $1 ORDER BY seq",
            product.id,
        )
    finally:
        await connection.close()
    assert [r["type"] for r in rows] == [
        "product.created",
        "inventory.reserved",
        "inventory.released",
    ]
    reserved, released = (orjson.loads(r["payload"]) for r in rows[1:])
    assert reserved == {
        "reservationId": reservation.reservation_id,
        "productId": product.id,
        "userId": user_id,
        "quantity": 2,
        "remainingStock": 1,
        "productVersion": 2,
    }
    assert (released["remainingStock"], released["productVersion"]) == (3, 3)
