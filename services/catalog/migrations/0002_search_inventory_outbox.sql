-- Search (full text, and a dictionary of name words for typo correction with pg_trgm),
-- keyset indexes, reservations, the outbox, and the service's own secrets.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Full-text document of a product: name (weight A), category (B), description (C).
CREATE FUNCTION products_search_vector(name text, category text, description text)
RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT setweight(to_tsvector('english'::regconfig, name), 'A')
        || setweight(to_tsvector('english'::regconfig, category), 'B')
        || setweight(to_tsvector('english'::regconfig, description), 'C')
$$;

-- Kept by a trigger rather than a generated column so that stock changes (reservations)
-- do not recompute it.
ALTER TABLE products ADD COLUMN search tsvector NOT NULL DEFAULT ''::tsvector;

-- Every word of a product name or category, for correcting misspelt search words: a query
-- word that starts no known word is also tried as its nearest known words (pg_trgm). Words
-- are only ever added (a stale one costs nothing: it just matches no product).
CREATE TABLE search_words (
    word text PRIMARY KEY
);

CREATE INDEX search_words_trgm_idx ON search_words USING gist (word gist_trgm_ops);

CREATE FUNCTION products_search_refresh() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.search := products_search_vector(NEW.name, NEW.category, NEW.description);
    INSERT INTO search_words (word)
    SELECT DISTINCT word
    FROM regexp_split_to_table(lower(NEW.name || ' ' || NEW.category), '\W+') AS word
    WHERE length(word) BETWEEN 3 AND 40
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER products_search_refresh
    BEFORE INSERT OR UPDATE OF name, category, description ON products
    FOR EACH ROW EXECUTE FUNCTION products_search_refresh();

UPDATE products SET name = name;  -- fills search and search_words for existing rows

-- No pending list (fastupdate): searches stay fast right after bulk writes, and writes that
-- do not change the text (stock, price) do not touch this index at all.
CREATE INDEX products_search_idx ON products USING gin (search) WITH (fastupdate = off)
    WHERE deleted_at IS NULL;

-- Keyset pagination: every order ends with id, so a position is one row.
CREATE INDEX products_price_idx ON products (price_cents, id) WHERE deleted_at IS NULL;
CREATE INDEX products_created_idx ON products (created_at, id) WHERE deleted_at IS NULL;
CREATE INDEX products_category_price_idx ON products (category, price_cents, id)
    WHERE deleted_at IS NULL;
CREATE INDEX products_category_created_idx ON products (category, created_at, id)
    WHERE deleted_at IS NULL;
DROP INDEX products_category_idx;

-- A reservation takes units out of stock for a user. (user_id, idempotency_key) makes a
-- retried request a replay: request_hash tells a retry from a different request, and the
-- first answer (remaining_stock) is kept to be replayed.
CREATE TABLE reservations (
    id              uuid PRIMARY KEY,
    product_id      uuid NOT NULL REFERENCES products (id),
    user_id         text NOT NULL,
    quantity        integer NOT NULL CHECK (quantity > 0),
    idempotency_key text NOT NULL,
    request_hash    bytea NOT NULL,
    remaining_stock integer NOT NULL,
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'released')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    released_at     timestamptz,
    released_stock  integer,
    CONSTRAINT reservations_released CHECK ((status = 'released') = (released_at IS NOT NULL))
);

CREATE UNIQUE INDEX reservations_user_key ON reservations (user_id, idempotency_key);
CREATE INDEX reservations_product_idx ON reservations (product_id);

-- Domain events written in the same transaction as the change (mesh.outbox relays them).
CREATE TABLE outbox (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    type        text NOT NULL,
    subject     text NOT NULL,
    occurred_at timestamptz NOT NULL,
    payload     jsonb NOT NULL,
    traceparent text,
    tracestate  text,
    relayed_at  timestamptz
);

CREATE INDEX outbox_pending_idx ON outbox (seq) WHERE relayed_at IS NULL;
CREATE INDEX outbox_relayed_idx ON outbox (relayed_at) WHERE relayed_at IS NOT NULL;

-- Secrets the service makes for itself on first start (e.g. the page-token key), so that
-- every replica shares them without configuration.
CREATE TABLE service_secrets (
    name       text PRIMARY KEY,
    secret     bytea NOT NULL CHECK (octet_length(secret) >= 32),
    created_at timestamptz NOT NULL DEFAULT now()
);
