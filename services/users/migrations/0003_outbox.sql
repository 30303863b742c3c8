-- The transactional outbox (mesh.outbox.schema): user.registered is written with the account.
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

