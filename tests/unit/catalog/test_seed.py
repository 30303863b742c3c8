from __future__ import annotations

from services.catalog import validation
from services.catalog.seed import CATEGORIES, generate


def test_products_are_deterministic_and_valid() -> None:
    first = list(generate(240))
    assert first == list(generate(240))
    assert list(generate(5, start=100)) == first[99:104]
    assert len({p.sku for p in first}) == len({p.id for p in first}) == 240
    assert {p.category for p in first} == {c.name for c in CATEGORIES}
    assert len(CATEGORIES) == 12
    for product in first:
        assert product.price_cents > 0
        assert product.stock >= 0
        assert product.currency in validation.CURRENCIES
        assert len(product.name) <= validation.NAME_MAX
        assert len(product.sku) <= validation.SKU_MAX
    assert any(p.stock == 0 for p in first)
