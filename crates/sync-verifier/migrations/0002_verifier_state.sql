-- Continuity state per (symbol, stream), so a restarted verifier resumes from the database
-- and not from memory; kline trade ids (REST rows have none); gap bookkeeping.
CREATE TABLE IF NOT EXISTS stream_state (
    symbol          TEXT        NOT NULL,
    stream          TEXT        NOT NULL,
    max_seen        BIGINT      NOT NULL,
    last_event_ms   BIGINT      NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, stream)
);

ALTER TABLE klines ADD COLUMN IF NOT EXISTS first_trade_id BIGINT;
ALTER TABLE klines ADD COLUMN IF NOT EXISTS last_trade_id BIGINT;
ALTER TABLE gaps ADD COLUMN IF NOT EXISTS heal_seconds DOUBLE PRECISION;
