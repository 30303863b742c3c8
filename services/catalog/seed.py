"""A realistic demo catalog: a few thousand products over a dozen categories.

`seed(dsn, namespace, count)` adds products with SKUs ``SEED-00001`` ... to the catalog
database of `namespace` and returns how many it added: the products (ids included) are
generated from a fixed random seed, so a second run adds nothing (a product whose id or SKU
exists is skipped, even one deleted since). Each added
product gets its ``product.created`` event in the outbox, in the same transaction; a
running catalog service relays them (and refreshes its read cache) within a second.

`generate(count)` gives the same products as rows, for benchmarks that bulk-load more.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg
import orjson

from mesh.outbox import Outbox, new_event
from mesh.settings import with_database
from services.catalog.records import ProductRecord, product_json
from services.catalog.store import COLUMNS, PRODUCT_CREATED, product_record

RANDOM_SEED: Final = 20240601
SKU_PREFIX: Final = "SEED-"
_EPOCH: Final = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class _Category:
    name: str
    nouns: tuple[str, ...]
    adjectives: tuple[str, ...]
    prices: tuple[int, int]  # euro cents, low and high
    attributes: dict[str, tuple[Any, ...]]


_BRANDS: Final = (
    "Nordvik", "Acme", "Lumen", "Oakridge", "Velora", "Kestrel", "Brightline", "Solace",
    "Tandem", "Quill", "Harbor", "Alpina", "Ferro", "Mistral", "Cobalt", "Juniper",
)  # fmt: skip
_COLOURS: Final = ("black", "white", "grey", "navy", "red", "green", "beige", "blue")

CATEGORIES: Final = (
    _Category(
        "electronics",
        ("Wireless Headphones", "Bluetooth Speaker", "USB-C Charger", "Smartwatch",
         "Mechanical Keyboard", "Webcam", "Power Bank", "Noise-Cancelling Earbuds",
         "4K Monitor", "Wireless Mouse", "E-Reader", "Action Camera"),
        ("Compact", "Pro", "Ultra", "Portable", "Slim", "Rugged", "Smart"),
        (1499, 59999),
        {"colour": _COLOURS, "warrantyYears": (1, 2, 3), "wireless": (True, False)},
    ),
    _Category(
        "kitchen",
        ("Chef's Knife", "Cast Iron Skillet", "Tea Pot", "French Press", "Cutting Board",
         "Stand Mixer", "Espresso Machine", "Kettle", "Dutch Oven", "Spice Rack",
         "Salad Spinner", "Toaster"),
        ("Stainless Steel", "Enamelled", "Bamboo", "Classic", "Professional", "Electric"),
        (799, 39999),
        {"colour": _COLOURS, "dishwasherSafe": (True, False),
         "material": ("steel", "iron", "wood", "ceramic")},
    ),
    _Category(
        "books",
        ("Cookbook", "Mystery Novel", "Field Guide to Birds", "History of Rome",
         "Poetry Collection", "Science Fiction Anthology", "Travel Guide to Japan",
         "Gardening Handbook", "Biography", "Programming in Python", "Atlas", "Graphic Novel"),
        ("Illustrated", "Pocket", "Hardcover", "Annotated", "Collector's", "Revised"),
        (699, 4999),
        {"pages": (180, 240, 320, 412, 560), "language": ("en", "de", "fr", "es")},
    ),
    _Category(
        "clothing",
        ("T-Shirt", "Hoodie", "Denim Jacket", "Wool Sweater", "Rain Coat", "Chinos",
         "Linen Shirt", "Puffer Vest", "Polo Shirt", "Cardigan", "Scarf", "Beanie"),
        ("Organic Cotton", "Merino", "Slim Fit", "Oversized", "Waterproof", "Lightweight"),
        (1299, 24999),
        {"colour": _COLOURS, "size": ("XS", "S", "M", "L", "XL"),
         "material": ("cotton", "wool", "linen")},
    ),
    _Category(
        "shoes",
        ("Running Shoes", "Hiking Boots", "Sneakers", "Sandals", "Loafers", "Trail Runners",
         "Slippers", "Chelsea Boots", "Football Boots", "Court Shoes"),
        ("Lightweight", "Waterproof", "Cushioned", "Leather", "Vegan", "Breathable"),
        (2499, 22999),
        {"colour": _COLOURS, "euSize": (37, 38, 39, 40, 41, 42, 43, 44, 45)},
    ),
    _Category(
        "sports",
        ("Yoga Mat", "Dumbbell Set", "Tennis Racket", "Cycling Helmet", "Jump Rope",
         "Football", "Resistance Bands", "Water Bottle", "Climbing Harness", "Foam Roller",
         "Basketball", "Swimming Goggles"),
        ("Non-Slip", "Adjustable", "Competition", "Training", "Insulated", "Eco"),
        (599, 29999),
        {"colour": _COLOURS, "weightKg": (0.2, 0.5, 1, 2.5, 5, 10)},
    ),
    _Category(
        "toys",
        ("Building Blocks", "Puzzle", "Board Game", "Plush Bear", "Remote Control Car",
         "Wooden Train Set", "Kite", "Science Kit", "Doll House", "Card Game"),
        ("Classic", "Deluxe", "Family", "Junior", "Giant", "Magnetic"),
        (499, 14999),
        {"minAge": (3, 6, 8, 10, 12), "players": (1, 2, 4, 6)},
    ),
    _Category(
        "garden",
        ("Garden Hose", "Pruning Shears", "Watering Can", "Raised Bed", "Bird Feeder",
         "Compost Bin", "Solar Lights", "Lawn Mower", "Plant Pots", "Hammock"),
        ("Heavy-Duty", "Expandable", "Cordless", "Weatherproof", "Terracotta", "Folding"),
        (899, 49999),
        {"material": ("steel", "plastic", "wood", "clay"), "outdoor": (True,)},
    ),
    _Category(
        "beauty",
        ("Face Serum", "Shampoo", "Hand Cream", "Lip Balm", "Sunscreen SPF 50",
         "Body Lotion", "Hair Dryer", "Perfume", "Beard Oil", "Clay Mask"),
        ("Hydrating", "Organic", "Fragrance-Free", "Travel Size", "Vitamin C", "Gentle"),
        (399, 12999),
        {"volumeMl": (15, 30, 50, 100, 250), "vegan": (True, False)},
    ),
    _Category(
        "home",
        ("Desk Lamp", "Throw Blanket", "Scented Candle", "Wall Clock", "Bookshelf",
         "Area Rug", "Curtains", "Picture Frame", "Storage Basket", "Cushion Cover",
         "Mirror", "Floor Lamp"),
        ("Scandinavian", "Vintage", "Minimalist", "Handmade", "Velvet", "Rattan"),
        (999, 34999),
        {"colour": _COLOURS, "room": ("living", "bedroom", "office", "hall")},
    ),
    _Category(
        "grocery",
        ("Ground Coffee", "Green Tea", "Olive Oil", "Dark Chocolate", "Honey", "Pasta",
         "Granola", "Hot Sauce", "Maple Syrup", "Sea Salt"),
        ("Organic", "Fair Trade", "Single Origin", "Artisan", "Extra Virgin", "Raw"),
        (249, 2999),
        {"weightG": (100, 250, 500, 1000), "organic": (True, False)},
    ),
    _Category(
        "office",
        ("Notebook", "Fountain Pen", "Desk Organizer", "Office Chair", "Standing Desk",
         "Stapler", "Whiteboard", "Paper Shredder", "Monitor Stand", "Planner"),
        ("Ergonomic", "Dotted", "Refillable", "Height-Adjustable", "Recycled", "Premium"),
        (349, 69999),
        {"colour": _COLOURS, "recycled": (True, False)},
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class SeedProduct:
    id: uuid.UUID
    sku: str
    name: str
    description: str
    price_cents: int
    currency: str
    category: str
    attributes: dict[str, Any]
    stock: int
    created_at: datetime


def generate(
    count: int, *, start: int = 1, random_seed: int = RANDOM_SEED
) -> Iterator[SeedProduct]:
    """Products number `start` .. `start + count - 1`; product n is always the same."""
    for number in range(start, start + count):
        rng = random.Random(random_seed * 1_000_003 + number)
        category = CATEGORIES[number % len(CATEGORIES)]
        noun = rng.choice(category.nouns)
        adjective = rng.choice(category.adjectives)
        brand = rng.choice(_BRANDS)
        low, high = category.prices
        price = int(math.exp(rng.uniform(math.log(low), math.log(high))))
        price = max(99, price - price % 100 + 99)
        attributes = {key: rng.choice(values) for key, values in category.attributes.items()}
        description = (
            f"The {adjective.lower()} {noun.lower()} from {brand}. "
            f"{rng.choice(_PRAISE)} {rng.choice(_DETAILS)}"
        )
        yield SeedProduct(
            id=uuid.UUID(int=rng.getrandbits(128), version=4),
            sku=f"{SKU_PREFIX}{number:05d}",
            name=f"{brand} {adjective} {noun}",
            description=description,
            price_cents=price,
            currency="EUR",
            category=category.name,
            attributes=attributes,
            stock=0 if rng.random() < 0.08 else rng.randint(1, 250),
            created_at=_EPOCH + timedelta(seconds=number * 600 + rng.randint(0, 599)),
        )


_PRAISE: Final = (
    "Built to last for years of daily use.",
    "A customer favourite since its launch.",
    "Designed in Europe and tested by experts.",
    "Thoughtful details make it a joy to use.",
    "Great value without compromising on quality.",
    "Loved by beginners and professionals alike.",
)
_DETAILS: Final = (
    "Ships in recyclable packaging.",
    "Easy to clean and simple to store.",
    "Comes with a two-year guarantee.",
    "Pairs well with the rest of the range.",
    "Makes a perfect gift.",
    "Available while stocks last.",
)


async def seed(postgres_dsn: str, namespace: str, count: int = 3000) -> int:
    """Add the first `count` demo products to `<namespace>catalog`; how many were new.

    `postgres_dsn` names the server (MESH_POSTGRES_DSN); the database must be migrated.
    """
    if count < 0:
        raise ValueError("count must not be negative")
    products = list(generate(count))
    outbox = Outbox("outbox")
    connection = await asyncpg.connect(with_database(postgres_dsn, f"{namespace}catalog"))
    try:
        async with connection.transaction():
            rows = await connection.fetch(
                f"""
                INSERT INTO products (id, sku, name, description, price_cents, currency,
                                      category, attributes, stock, created_at, updated_at)
                SELECT id, sku, name, description, price_cents, currency, category,
                       attributes::jsonb, stock, created_at, created_at
                FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[],
                            $6::text[], $7::text[], $8::text[], $9::int[], $10::timestamptz[])
                    AS seed(id, sku, name, description, price_cents, currency, category,
                            attributes, stock, created_at)
                ON CONFLICT DO NOTHING
                RETURNING {COLUMNS}
                """,
                [p.id for p in products],
                [p.sku for p in products],
                [p.name for p in products],
                [p.description for p in products],
                [p.price_cents for p in products],
                [p.currency for p in products],
                [p.category for p in products],
                [orjson.dumps(p.attributes).decode() for p in products],
                [p.stock for p in products],
                [p.created_at for p in products],
            )
            added: list[ProductRecord] = [product_record(row) for row in rows]
            await outbox.add(
                connection,
                *(
                    new_event(PRODUCT_CREATED, str(p.id), product_json(p), p.created_at)
                    for p in added
                ),
            )
    finally:
        await connection.close()
    return len(added)
