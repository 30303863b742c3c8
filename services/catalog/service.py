"""The catalog domain, independent of transport and storage.

Reads go through the read cache (cache-aside in Redis, see `mesh.cache`); every write
invalidates what it changed after its transaction commits and before it answers, then wakes
the outbox relay. Cache keys: ``product:<id>`` (version key ``product:<id>:v``) for one
product; ``list:<hash>`` and ``categories`` under the shared version key ``lists``, which
every write bumps (any change can move a product in or out of any list).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from mesh.cache import ReadCache
from mesh.errors import (
    Aborted,
    AlreadyExists,
    FieldError,
    IdempotencyKeyReused,
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    invalid,
)
from mesh.outbox import Event
from services.catalog import validation as check
from services.catalog.inventory import Inventory, KeyReused, OutOfStock, ReservationMissing
from services.catalog.listing import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    MAX_QUERY_LENGTH,
    ORDER_NAMES,
    Corrections,
    Cursor,
    InvalidPageToken,
    ListQuery,
    Order,
    PageTokens,
    SearchText,
)
from services.catalog.records import (
    CategoryCount,
    NewProduct,
    ProductChanges,
    ProductRecord,
    ReservationRecord,
    decode_product,
    encode_product,
    product_from_json,
    product_json,
)
from services.catalog.store import ProductMissing, ProductStore, SkuTaken, StaleVersion

LISTS_VERSION: Final = "lists"
CORRECTIONS_SECONDS: Final = 60.0
CORRECTIONS_KEPT: Final = 10_000
_ETAG: Final = re.compile(r'\s*"v([0-9]{1,18})"\s*')


def product_key(product_id: uuid.UUID) -> str:
    return f"product:{product_id}"


def product_version_key(product_id: uuid.UUID) -> str:
    return f"product:{product_id}:v"


def etag(version: int) -> str:
    """The strong entity tag of a product at `version`."""
    return f'"v{version}"'


def versions_from_if_match(if_match: str) -> frozenset[int] | None:
    """The versions an If-Match value accepts; None for ``*`` (any current product).

    Strong comparison (RFC 9110): a weak tag or one this service did not make matches none.
    """
    if if_match.strip() == "*":
        return None
    versions = set()
    for part in if_match.split(","):
        found = _ETAG.fullmatch(part)
        if found:
            versions.add(int(found[1]))
    return frozenset(versions)


def expected_versions(if_match: str | None, version: int | None) -> frozenset[int] | None:
    """What a conditional write requires: None for unconditional."""
    allowed = versions_from_if_match(if_match) if if_match is not None else None
    if version is not None:
        allowed = frozenset({version}) if allowed is None else allowed & {version}
    return allowed


def parse_id(value: str, field: str = "id", what: str = "product") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise invalid([FieldError(field, f"must be a {what} id (a UUID)")]) from None


@dataclass(frozen=True, slots=True)
class ListRequest:
    category: str = ""
    q: str = ""
    min_price_cents: int | None = None
    max_price_cents: int | None = None
    in_stock: bool | None = None
    order_by: str = ""
    page_size: int | None = None
    page_token: str = ""


@dataclass(frozen=True, slots=True)
class Page:
    products: Sequence[ProductRecord]
    next_page_token: str


class CatalogService:
    def __init__(
        self,
        store: ProductStore,
        inventory: Inventory,
        cache: ReadCache,
        page_tokens: PageTokens,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._store = store
        self._inventory = inventory
        self._cache = cache
        self._page_tokens = page_tokens
        self._on_change = on_change
        # Spelling corrections per word, briefly kept: the dictionary only grows, and a walk
        # freezes its corrections in its page tokens anyway.
        self._known_corrections: dict[str, tuple[tuple[str, ...], float]] = {}

    # Reads

    async def get_product(self, product_id: str) -> ProductRecord:
        pid = parse_id(product_id)

        async def load() -> bytes | None:
            product = await self._store.get(pid)
            return None if product is None else encode_product(product)

        raw = await self._cache.get(product_key(pid), load)
        if raw is None:
            raise NotFound(f"no product with id {product_id}")
        return decode_product(raw)

    async def list_products(self, request: ListRequest) -> Page:
        query, page_size = self._list_query(request)
        cursor = self._cursor(query, request.page_token)
        key = hashlib.sha256(
            b"%s|%d|%s" % (query.fingerprint(), page_size, request.page_token.encode())
        ).hexdigest()

        async def load() -> bytes:
            if cursor is not None:
                corrections = cursor.corrections  # the walk keeps its first page's words
            elif query.text is not None and query.text.words:
                corrections = await self._corrections(query.text.words)
            else:
                corrections = ()
            rows = await self._store.page(query, corrections, cursor, page_size + 1)
            next_token = ""
            if len(rows) > page_size:
                rows = rows[:page_size]
                last, sort_key = rows[-1]
                next_token = self._page_tokens.encode(query, Cursor(sort_key, last.id, corrections))
            return orjson.dumps(
                {"products": [product_json(p) for p, _ in rows], "next": next_token}
            )

        raw = await self._cache.get(f"list:{key}", load, version_key=LISTS_VERSION)
        assert raw is not None
        document = orjson.loads(raw)
        return Page([product_from_json(p) for p in document["products"]], document["next"])

    async def _corrections(self, words: Sequence[str]) -> Corrections:
        now = time.monotonic()
        known = self._known_corrections
        missing = [w for w in dict.fromkeys(words) if w not in known or known[w][1] < now]
        if missing:
            if len(known) > CORRECTIONS_KEPT:
                known.clear()
            found = await self._store.corrections(missing)
            for word, alternatives in zip(missing, found, strict=True):
                known[word] = (alternatives, now + CORRECTIONS_SECONDS)
        return tuple(known[w][0] for w in words)

    async def categories(self) -> list[CategoryCount]:
        async def load() -> bytes:
            return orjson.dumps([[c.name, c.product_count] for c in await self._store.categories()])

        raw = await self._cache.get("categories", load, version_key=LISTS_VERSION)
        assert raw is not None
        return [CategoryCount(name, count) for name, count in orjson.loads(raw)]

    # Writes

    async def create_product(self, product: NewProduct) -> ProductRecord:
        errors: list[FieldError] = []
        check.check_text(errors, "sku", product.sku, maximum=check.SKU_MAX)
        check.check_text(errors, "name", product.name, maximum=check.NAME_MAX)
        check.check_description(errors, product.description)
        check.check_price(errors, product.price_cents)
        currency = check.normalize_currency(errors, product.currency)
        check.check_text(errors, "category", product.category, maximum=check.CATEGORY_MAX)
        check.check_attributes(errors, product.attributes)
        check.check_stock(errors, product.stock)
        if errors:
            raise invalid(errors)
        clean = NewProduct(
            sku=product.sku,
            name=product.name,
            description=product.description,
            price_cents=product.price_cents,
            currency=currency,
            category=product.category,
            attributes=plain_json(product.attributes),
            stock=product.stock,
        )
        try:
            record = await self._store.create(clean)
        except SkuTaken:
            raise _sku_taken(product.sku) from None
        await self._changed([record.id])
        return record

    async def update_product(
        self,
        product_id: str,
        changes: ProductChanges,
        *,
        version: int | None = None,
        if_match: str | None = None,
    ) -> ProductRecord:
        pid = parse_id(product_id)
        errors: list[FieldError] = []
        if changes.sku is not None:
            check.check_text(errors, "sku", changes.sku, maximum=check.SKU_MAX)
        if changes.name is not None:
            check.check_text(errors, "name", changes.name, maximum=check.NAME_MAX)
        if changes.description is not None:
            check.check_description(errors, changes.description)
        if changes.price_cents is not None:
            check.check_price(errors, changes.price_cents)
        currency = changes.currency
        if currency is not None:
            currency = check.normalize_currency(errors, currency)
        if changes.category is not None:
            check.check_text(errors, "category", changes.category, maximum=check.CATEGORY_MAX)
        if changes.attributes is not None:
            check.check_attributes(errors, changes.attributes)
        if changes.stock is not None:
            check.check_stock(errors, changes.stock)
        if version is not None and version < 1:
            errors.append(FieldError("version", "must be a version of the product (1 or more)"))
        if errors:
            raise invalid(errors)
        clean = ProductChanges(
            sku=changes.sku,
            name=changes.name,
            description=changes.description,
            price_cents=changes.price_cents,
            currency=currency,
            category=changes.category,
            attributes=None if changes.attributes is None else plain_json(changes.attributes),
            stock=changes.stock,
        )
        if not clean.columns():
            raise InvalidArgument("nothing to change: give at least one product field")
        try:
            record = await self._store.update(pid, clean, expected_versions(if_match, version))
        except ProductMissing:
            raise NotFound(f"no product with id {product_id}") from None
        except StaleVersion as stale:
            raise _stale(stale) from None
        except SkuTaken:
            raise _sku_taken(str(changes.sku)) from None
        await self._changed([record.id])
        return record

    async def delete_product(
        self, product_id: str, *, version: int | None = None, if_match: str | None = None
    ) -> None:
        pid = parse_id(product_id)
        try:
            record = await self._store.delete(pid, expected_versions(if_match, version))
        except ProductMissing:
            raise NotFound(f"no product with id {product_id}") from None
        except StaleVersion as stale:
            raise _stale(stale) from None
        await self._changed([record.id])

    async def reserve(
        self, user_id: str, product_id: str, quantity: int, idempotency_key: str
    ) -> ReservationRecord:
        pid = parse_id(product_id)
        errors: list[FieldError] = []
        if not 1 <= quantity <= check.QUANTITY_MAX:
            errors.append(FieldError("quantity", f"must be 1 to {check.QUANTITY_MAX}"))
        check.check_text(
            errors, "idempotencyKey", idempotency_key, maximum=check.IDEMPOTENCY_KEY_MAX
        )
        if errors:
            raise invalid(errors)
        try:
            reservation, made = await self._inventory.reserve(
                user_id, pid, quantity, idempotency_key
            )
        except ProductMissing:
            raise NotFound(f"no product with id {product_id}") from None
        except OutOfStock as short:
            raise Aborted(
                f"cannot reserve {quantity}: only {short.available} in stock",
                reason="INSUFFICIENT_STOCK",
                metadata={"availableStock": str(short.available)},
            ) from None
        except KeyReused:
            raise IdempotencyKeyReused(
                "this idempotencyKey was used for a different reservation; use a new key",
                field_errors=(FieldError("idempotencyKey", "already used for another request"),),
            ) from None
        if made:
            await self._changed([reservation.product_id])
        return reservation

    async def release(
        self, reservation_id: str, user_id: str, *, is_admin: bool = False
    ) -> ReservationRecord:
        rid = parse_id(reservation_id, what="reservation")
        try:
            reservation, made = await self._inventory.release(rid, None if is_admin else user_id)
        except ReservationMissing:
            raise NotFound(f"no reservation with id {reservation_id}") from None
        if made:
            await self._changed([reservation.product_id])
        return reservation

    async def _changed(self, product_ids: Iterable[uuid.UUID]) -> None:
        await self._cache.invalidate(_version_keys(product_ids))
        self._on_change()

    def _list_query(self, request: ListRequest) -> tuple[ListQuery, int]:
        errors: list[FieldError] = []
        q = request.q.strip()
        if len(request.q) > MAX_QUERY_LENGTH:
            errors.append(FieldError("q", f"must be at most {MAX_QUERY_LENGTH} characters"))
        elif "\x00" in q:
            errors.append(FieldError("q", "must not contain NUL characters"))
        if request.category:
            check.check_text(errors, "category", request.category, maximum=check.CATEGORY_MAX)
        for name, value in (
            ("minPriceCents", request.min_price_cents),
            ("maxPriceCents", request.max_price_cents),
        ):
            if value is not None and value < 0:
                errors.append(FieldError(name, "must not be negative"))
        if (
            request.min_price_cents is not None
            and request.max_price_cents is not None
            and request.min_price_cents > request.max_price_cents
        ):
            errors.append(FieldError("maxPriceCents", "must not be less than minPriceCents"))
        page_size = DEFAULT_PAGE_SIZE if request.page_size is None else request.page_size
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            errors.append(FieldError("pageSize", f"must be 1 to {MAX_PAGE_SIZE}"))
        order = Order.RELEVANCE if q else Order.CREATED_DESC
        if request.order_by:
            try:
                order = Order(request.order_by)
            except ValueError:
                errors.append(FieldError("orderBy", f"must be one of {', '.join(ORDER_NAMES)}"))
        if order is Order.RELEVANCE and not q:
            errors.append(FieldError("orderBy", "relevance needs a search text (q)"))
        if errors:
            raise invalid(errors)
        query = ListQuery(
            category=request.category or None,
            text=SearchText.parse(q) if q else None,
            min_price_cents=request.min_price_cents,
            max_price_cents=request.max_price_cents,
            in_stock=request.in_stock,
            order=order,
        )
        return query, page_size

    def _cursor(self, query: ListQuery, token: str) -> Cursor | None:
        if not token:
            return None
        try:
            return self._page_tokens.decode(query, token)
        except InvalidPageToken as exc:
            raise invalid([FieldError("pageToken", str(exc))]) from None


async def invalidate_for_events(cache: ReadCache, events: Sequence[Event]) -> None:
    """The outbox relay's hook: invalidate again what the events changed.

    It makes invalidation at-least-once: a write whose own invalidation could not reach Redis
    (or whose process died right after the commit) is invalidated before its event is
    published, and the event waits while Redis is unreachable.
    """
    ids = {uuid.UUID(e.subject) for e in events if _is_uuid(e.subject)}
    if not await cache.invalidate(_version_keys(ids)):
        raise ConnectionError("cannot invalidate the read cache: Redis is unavailable")


def _version_keys(product_ids: Iterable[uuid.UUID]) -> list[str]:
    return [*(product_version_key(p) for p in product_ids), LISTS_VERSION]


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _sku_taken(sku: str) -> AlreadyExists:
    return AlreadyExists(
        f"a product with SKU {sku!r} exists already",
        field_errors=(FieldError("sku", "is taken by another product"),),
    )


def _stale(stale: StaleVersion) -> PreconditionFailed:
    return PreconditionFailed(
        f"the product changed meanwhile: it is at version {stale.current} ({etag(stale.current)})",
        metadata={"currentVersion": str(stale.current)},
    )


def plain_json(value: Any) -> Any:
    """JSON from a google.protobuf.Struct with whole numbers as integers (60, not 60.0)."""
    if isinstance(value, dict):
        return {k: plain_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_json(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value
