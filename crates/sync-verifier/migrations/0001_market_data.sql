-- Market data as the exchange defines it, plus the gap ledger (see crates/sync-verifier).
-- Prices and quantities stay exact: NUMERIC, never floating point.

CREATE TABLE IF NOT EXISTS aggtrades (
    symbol          TEXT        NOT NULL,
    agg_id          BIGINT      NOT NULL,
    price           NUMERIC     NOT NULL,
    qty             NUMERIC     NOT NULL,
    first_trade_id  BIGINT      NOT NULL,
    last_trade_id   BIGINT      NOT NULL,
    trade_time_ms   BIGINT      NOT NULL,
    buyer_is_maker  BOOLEAN     NOT NULL,
    source          TEXT        NOT NULL CHECK (source IN ('ws', 'backfill')),
    received_at_ms  BIGINT      NOT NULL,
    PRIMARY KEY (symbol, agg_id)
);

CREATE TABLE IF NOT EXISTS klines (
    symbol          TEXT        NOT NULL,
    interval        TEXT        NOT NULL,
    open_time_ms    BIGINT      NOT NULL,
    close_time_ms   BIGINT      NOT NULL,
    open            NUMERIC     NOT NULL,
    high            NUMERIC     NOT NULL,
    low             NUMERIC     NOT NULL,
    close           NUMERIC     NOT NULL,
    volume          NUMERIC     NOT NULL,
    quote_volume    NUMERIC     NOT NULL,
    trades          BIGINT      NOT NULL,
    taker_buy_base  NUMERIC     NOT NULL,
    taker_buy_quote NUMERIC     NOT NULL,
    source          TEXT        NOT NULL CHECK (source IN ('ws', 'backfill')),
    received_at_ms  BIGINT      NOT NULL,
    PRIMARY KEY (symbol, interval, open_time_ms)
);

-- A hole in a stream: [first_missing, last_missing] in the stream's key space
-- (aggregate id, or kline open time in ms). Closed when every record arrived.
CREATE TABLE IF NOT EXISTS gaps (
    id              BIGSERIAL   PRIMARY KEY,
    symbol          TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    first_missing   BIGINT      NOT NULL,
    last_missing    BIGINT      NOT NULL,
    opened_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    healed_at       TIMESTAMPTZ,
    backfill_requests INT       NOT NULL DEFAULT 0,
    cause           TEXT,
    CHECK (last_missing >= first_missing)
);
CREATE INDEX IF NOT EXISTS gaps_open ON gaps (symbol, stream) WHERE healed_at IS NULL;
