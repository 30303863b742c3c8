"""Listing and search over real gRPC: filters, full text, typos, orders, keyset pages."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import pytest_asyncio

from mesh.harness import BackingUrls
from protos.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from services.catalog.listing import Cursor, ListQuery, PageTokens
from services.catalog.seed import seed
from tests.integration.services.catalog_support import (
    CatalogStack,
    catalog_client,
    catalog_stack,
    create,
    fields_of,
)

Stub = catalog_pb2_grpc.CatalogServiceStub
SEEDED = 600  # 50 per category


@pytest_asyncio.fixture(scope="module")
async def stack(
    backing: BackingUrls, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[CatalogStack]:
    async with catalog_stack(backing, tmp_path_factory.mktemp("keys")) as running:
        assert await seed(backing.postgres_dsn, running.stores.namespace, SEEDED) == SEEDED
        yield running


@pytest_asyncio.fixture(scope="module")
async def stub(stack: CatalogStack) -> AsyncIterator[Stub]:
    async with catalog_client(stack.address) as client:
        yield client


async def page(stub: Stub, **fields: Any) -> catalog_pb2.ListProductsResponse:
    response: catalog_pb2.ListProductsResponse = await stub.ListProducts(
        catalog_pb2.ListProductsRequest(**fields)
    )
    return response


async def walk(stub: Stub, **fields: Any) -> list[catalog_pb2.Product]:
    products: list[catalog_pb2.Product] = []
    token = ""
    for _ in range(1000):
        response = await page(stub, page_token=token, **fields)
        products += response.products
        token = response.next_page_token
        if not token:
            return products
    raise AssertionError("the walk did not end")


async def invalid(stub: Stub, **fields: Any) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await page(stub, **fields)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return fields_of(caught.value)


async def test_default_page_is_twenty_newest_first(stub: Stub) -> None:
    response = await page(stub)
    assert len(response.products) == 20
    assert response.next_page_token
    created = [p.created_at.ToDatetime() for p in response.products]
    assert created == sorted(created, reverse=True)


async def test_seed_is_idempotent_and_spans_a_dozen_categories(
    stub: Stub, stack: CatalogStack, backing: BackingUrls
) -> None:
    assert await seed(backing.postgres_dsn, stack.stores.namespace, SEEDED) == 0
    categories = (await stub.ListCategories(catalog_pb2.ListCategoriesRequest())).categories
    seeded = {c.name: c.product_count for c in categories if c.product_count >= 50}
    assert len(seeded) == 12
    assert seeded["kitchen"] == 50


async def test_categories_count_live_products(stub: Stub, stack: CatalogStack) -> None:
    admin = stack.admin()
    name = f"cat-{uuid.uuid4().hex[:8]}"
    products = [await create(stub, admin, category=name) for _ in range(3)]

    async def count() -> int:
        categories = await stub.ListCategories(catalog_pb2.ListCategoriesRequest())
        return next((c.product_count for c in categories.categories if c.name == name), 0)

    assert await count() == 3
    await stub.DeleteProduct(catalog_pb2.DeleteProductRequest(id=products[0].id), metadata=admin)
    assert await count() == 2  # the cached list was invalidated by the delete
    listed = await stub.ListCategories(catalog_pb2.ListCategoriesRequest())
    names = [c.name for c in listed.categories]
    assert names == sorted(names)


async def test_filters_combine(stub: Stub) -> None:
    products = await walk(
        stub,
        category="kitchen",
        min_price_cents=2000,
        max_price_cents=10000,
        in_stock=True,
        page_size=100,
    )
    assert products
    assert all(p.category == "kitchen" for p in products)
    assert all(2000 <= p.price_cents <= 10000 and p.stock > 0 for p in products)
    out_of_stock = await walk(stub, in_stock=False, page_size=100)
    assert out_of_stock
    assert all(p.stock == 0 for p in out_of_stock)
    everything = await walk(stub, category="kitchen", page_size=100)
    expected = [p for p in everything if 2000 <= p.price_cents <= 10000 and p.stock > 0]
    assert {p.id for p in products} == {p.id for p in expected}


@pytest.mark.parametrize(
    ("order_by", "key", "reverse"),
    [
        ("price", "price_cents", False),
        ("-price", "price_cents", True),
        ("createdAt", "created_at", False),
        ("-createdAt", "created_at", True),
    ],
)
async def test_orders_walk_every_product_once(
    stub: Stub, order_by: str, key: str, reverse: bool
) -> None:
    products = await walk(stub, category="books", order_by=order_by, page_size=7)
    assert len(products) == 50
    assert len({p.id for p in products}) == 50
    keys = [
        (getattr(p, key).ToDatetime() if key == "created_at" else getattr(p, key), p.id)
        for p in products
    ]
    assert keys == sorted(keys, reverse=reverse)


async def test_full_text_search_is_ranked_and_filtered(stub: Stub) -> None:
    response = await page(stub, q="headphones", page_size=100)
    assert response.products
    assert all("Headphones" in p.name for p in response.products[:5])
    assert all("headphone" in (p.name + p.description).lower() for p in response.products)
    in_category = await page(stub, q="espresso machine", category="kitchen", in_stock=True)
    assert in_category.products
    assert all("Espresso Machine" in p.name and p.stock > 0 for p in in_category.products)
    # Description and category words are searched too (stemmed).
    gifts = await page(stub, q="gifts", page_size=5)
    assert any("gift" in p.description for p in gifts.products)
    assert (await page(stub, q="grocery", page_size=5)).products[0].category == "grocery"


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("headp", "Headphones"),  # a prefix
        ("wirless headphnes", "Wireless Headphones"),  # typos
        ("mechanicl keybord", "Mechanical Keyboard"),
        ("espreso", "Espresso Machine"),
        ("gardning handbook", "Gardening Handbook"),
    ],
)
async def test_typos_and_prefixes_match_names(stub: Stub, q: str, expected: str) -> None:
    response = await page(stub, q=q, page_size=10)
    assert response.products, q
    assert expected in response.products[0].name


async def test_relevance_pages_are_stable(stub: Stub) -> None:
    first = await walk(stub, q="steel", page_size=3)
    again = await walk(stub, q="steel", page_size=50)
    assert [p.id for p in first] == [p.id for p in again]
    assert len({p.id for p in first}) == len(first) > 3


async def test_search_text_is_literal(stub: Stub, stack: CatalogStack) -> None:
    admin = stack.admin()
    nasty = f"Robert'); DROP TABLE products;-- {uuid.uuid4().hex[:6]}"
    product = await create(stub, admin, name=nasty, category="literal")
    found = await page(stub, q=nasty)
    assert found.products[0].id == product.id
    for q in ("%", "_", "%%%", "*", "'", '"', ":*", "&|!()", "\\"):
        assert not (await page(stub, q=q)).products, q
    matched = await page(stub, q="' OR 1=1 --", category="literal")
    assert [p.id for p in matched.products] == []
    assert (await page(stub, category="literal")).products[0].id == product.id
    assert not (await page(stub, category="' OR ''='")).products


async def test_bad_list_requests_are_invalid(stub: Stub) -> None:
    assert await invalid(stub, page_size=0) == ["pageSize"]
    assert await invalid(stub, page_size=101) == ["pageSize"]
    assert await invalid(stub, page_size=-1) == ["pageSize"]
    assert await invalid(stub, q="x" * 10_000) == ["q"]
    assert await invalid(stub, order_by="name") == ["orderBy"]
    assert await invalid(stub, order_by="relevance") == ["orderBy"]  # needs q
    assert await invalid(stub, min_price_cents=-1) == ["minPriceCents"]
    assert await invalid(stub, min_price_cents=500, max_price_cents=100) == ["maxPriceCents"]
    assert len((await page(stub, page_size=100)).products) == 100
    assert len((await page(stub, page_size=1)).products) == 1


async def test_tampered_or_foreign_page_tokens_are_invalid(stub: Stub) -> None:
    token = (await page(stub, category="toys", page_size=5)).next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[20] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    foreign = PageTokens(b"another deployment's key, 32 b.").encode(
        ListQuery(category="toys"), Cursor(token_time(), uuid.uuid4())
    )
    for bad in (tampered, foreign, token[:-2], "garbage", "a" * 5000, "AAAA"):
        assert await invalid(stub, category="toys", page_size=5, page_token=bad) == ["pageToken"]
    # A token is bound to its filters and order.
    for other in ({"category": "books"}, {"category": "toys", "order_by": "price"},
                  {"category": "toys", "in_stock": True}):  # fmt: skip
        assert await invalid(stub, page_size=5, page_token=token, **other) == ["pageToken"]
    # The page size may change between pages.
    assert (await page(stub, category="toys", page_size=9, page_token=token)).products


def token_time() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@pytest.mark.parametrize("order_by", ["price", "-price", "createdAt", "-createdAt", "relevance"])
async def test_walk_under_concurrent_inserts_and_deletes(
    stub: Stub, stack: CatalogStack, order_by: str
) -> None:
    admin = stack.admin()
    category = f"walk-{uuid.uuid4().hex[:8]}"
    word = f"zq{uuid.uuid4().hex[:6]}"
    originals = [
        await create(
            stub, admin, category=category, name=f"{word} item {i}", price_cents=100 + i % 9
        )
        for i in range(40)
    ]
    doomed = {p.id for p in originals[::5]}
    survivors = {p.id for p in originals} - doomed
    to_delete = list(doomed)
    filters: dict[str, Any] = {"category": category, "order_by": order_by, "page_size": 6}
    if order_by == "relevance":
        filters["q"] = word
    seen: list[str] = []
    token = ""
    round_ = 0
    while True:
        response = await page(stub, page_token=token, **filters)
        seen += [p.id for p in response.products]
        token = response.next_page_token
        if not token:
            break
        round_ += 1
        for j in range(3):  # new products at every price, before and after the position
            await create(stub, admin, category=category, name=f"{word} new {round_}.{j}",
                         price_cents=100 + (round_ + j) % 9)  # fmt: skip
        if to_delete:
            await stub.DeleteProduct(
                catalog_pb2.DeleteProductRequest(id=to_delete.pop()), metadata=admin
            )
    assert len(seen) == len(set(seen)), "a product was returned twice"
    assert survivors <= set(seen), "a product that existed throughout was skipped"
