//! PostgreSQL: batched idempotent writes (UNNEST … ON CONFLICT DO NOTHING), the gap
//! ledger and the continuity state the verifier resumes from.

use crate::continuity::Gap;
use market::{AggTrade, Kline, Source, Stream};
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;

pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

/// A u64 as BIGINT. Records are validated (`crate::validate`) to fit before they get
/// here; should one not, it saturates rather than wrap to a negative id.
pub fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn source(s: &str) -> Source {
    if s == "backfill" {
        Source::Backfill
    } else {
        Source::Ws
    }
}

/// A stored record's identity: symbol and key (aggregate id, or kline open time).
pub type SymbolKey = (String, i64);

/// The trade columns in the order [`aggs_copy_text`] writes them.
macro_rules! agg_columns {
    () => {
        "symbol, agg_id, price, qty, first_trade_id, last_trade_id, trade_time_ms, buyer_is_maker, source, received_at_ms"
    };
}
const COPY_AGGS: &str = concat!("COPY aggtrades (", agg_columns!(), ") FROM STDIN");
const COPY_AGGS_STAGED: &str = concat!("COPY aggtrades_stage (", agg_columns!(), ") FROM STDIN");

/// Inserts new trades within the caller's transaction; returns the (symbol, id) of those
/// that were new (the others were already stored). The rows go in the way COPY writes
/// them. In the steady state every row is new: one COPY straight into the table, under a
/// savepoint. If a row was stored already (a reconnect's overlap, a back-fill), that COPY
/// is rolled back to the savepoint and the rows go through a temporary table of this
/// connection and one `INSERT … SELECT … ON CONFLICT DO NOTHING RETURNING`, so the write
/// stays idempotent and says which rows were new.
pub async fn insert_aggs(tx: &mut PgConnection, rows: &[AggTrade]) -> sqlx::Result<Vec<SymbolKey>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let data = aggs_copy_text(rows);
    sqlx::query("SAVEPOINT aggs_copy").execute(&mut *tx).await?;
    match copy_in(&mut *tx, COPY_AGGS, &data).await {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT aggs_copy")
                .execute(&mut *tx)
                .await?;
            return Ok(rows
                .iter()
                .map(|r| (r.symbol.clone(), big(r.agg_id)))
                .collect());
        }
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            sqlx::query("ROLLBACK TO SAVEPOINT aggs_copy")
                .execute(&mut *tx)
                .await?;
        }
        Err(e) => return Err(e),
    }
    // One round trip: the stage exists (quietly: "already exists" would be a notice every
    // time) and is empty.
    sqlx::query(
        "DO $$ BEGIN
           SET LOCAL client_min_messages = warning;
           CREATE TEMP TABLE IF NOT EXISTS aggtrades_stage (LIKE aggtrades);
           TRUNCATE aggtrades_stage;
         END $$",
    )
    .execute(&mut *tx)
    .await?;
    copy_in(&mut *tx, COPY_AGGS_STAGED, &data).await?;
    sqlx::query_as(
        "INSERT INTO aggtrades SELECT * FROM aggtrades_stage
         ON CONFLICT (symbol, agg_id) DO NOTHING
         RETURNING symbol, agg_id",
    )
    .fetch_all(&mut *tx)
    .await
}

/// `rows` in COPY's text format, in the order of `agg_columns!`.
fn aggs_copy_text(rows: &[AggTrade]) -> String {
    let mut data = String::with_capacity(rows.len() * 112);
    for r in rows {
        copy_row(
            &mut data,
            &[
                &r.symbol,
                &big(r.agg_id).to_string(),
                &r.price,
                &r.qty,
                &big(r.first_trade_id).to_string(),
                &big(r.last_trade_id).to_string(),
                &r.trade_time_ms.to_string(),
                if r.buyer_is_maker { "t" } else { "f" },
                r.source.as_str(),
                &r.received_at_ms.to_string(),
            ],
        );
    }
    data
}

/// Runs `statement` (a `COPY … FROM STDIN`) with `data`.
async fn copy_in(conn: &mut PgConnection, statement: &'static str, data: &str) -> sqlx::Result<()> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(data.as_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// Appends one row of COPY's text format: fields separated by tabs, each escaped.
fn copy_row(out: &mut String, fields: &[&str]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        for c in field.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

/// The stored versions of `ids` of `symbol`.
pub async fn stored_aggs(
    tx: &mut PgConnection,
    symbol: &str,
    ids: &[i64],
) -> sqlx::Result<Vec<AggTrade>> {
    let rows = sqlx::query(
        "SELECT agg_id, price::text AS price, qty::text AS qty, first_trade_id, last_trade_id, trade_time_ms, buyer_is_maker, source, received_at_ms
         FROM aggtrades WHERE symbol = $1 AND agg_id = ANY($2)",
    )
    .bind(symbol)
    .bind(ids)
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AggTrade {
                v: 1,
                symbol: symbol.to_string(),
                agg_id: r.try_get::<i64, _>("agg_id")?.max(0).unsigned_abs(),
                price: r.try_get("price")?,
                qty: r.try_get("qty")?,
                first_trade_id: r.try_get::<i64, _>("first_trade_id")?.max(0).unsigned_abs(),
                last_trade_id: r.try_get::<i64, _>("last_trade_id")?.max(0).unsigned_abs(),
                trade_time_ms: r.try_get("trade_time_ms")?,
                buyer_is_maker: r.try_get("buyer_is_maker")?,
                event_time_ms: None,
                received_at_ms: r.try_get("received_at_ms")?,
                source: source(&r.try_get::<String, _>("source")?),
            })
        })
        .collect()
}

/// Inserts new klines; returns the (symbol, open time) of those that were new.
pub async fn insert_klines(tx: &mut PgConnection, rows: &[Kline]) -> sqlx::Result<Vec<SymbolKey>> {
    let col = |f: fn(&Kline) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let int = |f: fn(&Kline) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let opt = |f: fn(&Kline) -> Option<i64>| rows.iter().map(f).collect::<Vec<Option<i64>>>();
    sqlx::query_as(
        "INSERT INTO klines (symbol, interval, open_time_ms, close_time_ms, open, high, low, close, volume, quote_volume, trades,
                             taker_buy_base, taker_buy_quote, source, received_at_ms, first_trade_id, last_trade_id)
         SELECT s, i, t, ct, o::numeric, h::numeric, l::numeric, c::numeric, v::numeric, qv::numeric, n, tb::numeric, tq::numeric, src, r, f, lt
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                     $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[], $15::bigint[], $16::bigint[], $17::bigint[])
              AS x(s, i, t, ct, o, h, l, c, v, qv, n, tb, tq, src, r, f, lt)
         ON CONFLICT (symbol, interval, open_time_ms) DO NOTHING
         RETURNING symbol, open_time_ms",
    )
    .bind(col(|r| r.symbol.clone()))
    .bind(col(|r| r.interval.clone()))
    .bind(int(|r| r.open_time_ms))
    .bind(int(|r| r.close_time_ms))
    .bind(col(|r| r.open.clone()))
    .bind(col(|r| r.high.clone()))
    .bind(col(|r| r.low.clone()))
    .bind(col(|r| r.close.clone()))
    .bind(col(|r| r.volume.clone()))
    .bind(col(|r| r.quote_volume.clone()))
    .bind(int(|r| big(r.trades)))
    .bind(col(|r| r.taker_buy_base.clone()))
    .bind(col(|r| r.taker_buy_quote.clone()))
    .bind(col(|r| r.source.as_str().to_string()))
    .bind(int(|r| r.received_at_ms))
    .bind(opt(|r| r.first_trade_id))
    .bind(opt(|r| r.last_trade_id))
    .fetch_all(tx)
    .await
}

/// The stored versions of klines of `symbol` at `open_times`.
pub async fn stored_klines(
    tx: &mut PgConnection,
    symbol: &str,
    interval: &str,
    open_times: &[i64],
) -> sqlx::Result<Vec<Kline>> {
    let rows = sqlx::query(
        "SELECT open_time_ms, close_time_ms, open::text AS open, high::text AS high, low::text AS low, close::text AS close,
                volume::text AS volume, quote_volume::text AS quote_volume, trades, taker_buy_base::text AS tbb,
                taker_buy_quote::text AS tbq, source, received_at_ms, first_trade_id, last_trade_id
         FROM klines WHERE symbol = $1 AND interval = $2 AND open_time_ms = ANY($3)",
    )
    .bind(symbol)
    .bind(interval)
    .bind(open_times)
    .fetch_all(tx)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Kline {
                v: 1,
                symbol: symbol.to_string(),
                interval: interval.to_string(),
                open_time_ms: r.try_get("open_time_ms")?,
                close_time_ms: r.try_get("close_time_ms")?,
                open: r.try_get("open")?,
                high: r.try_get("high")?,
                low: r.try_get("low")?,
                close: r.try_get("close")?,
                volume: r.try_get("volume")?,
                quote_volume: r.try_get("quote_volume")?,
                trades: r.try_get::<i64, _>("trades")?.max(0).unsigned_abs(),
                taker_buy_base: r.try_get("tbb")?,
                taker_buy_quote: r.try_get("tbq")?,
                first_trade_id: r.try_get("first_trade_id")?,
                last_trade_id: r.try_get("last_trade_id")?,
                event_time_ms: None,
                received_at_ms: r.try_get("received_at_ms")?,
                source: source(&r.try_get::<String, _>("source")?),
            })
        })
        .collect()
}

/// Saves the continuity state of `stream` for each `(symbol, max_seen, last_event_ms)` in
/// one statement; a stored state never goes back.
pub async fn save_states(
    tx: &mut PgConnection,
    stream: Stream,
    states: &[(String, i64, i64)],
) -> sqlx::Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO stream_state (symbol, stream, max_seen, last_event_ms)
         SELECT s, $1, m, e FROM UNNEST($2::text[], $3::bigint[], $4::bigint[]) AS x(s, m, e)
         ON CONFLICT (symbol, stream) DO UPDATE SET max_seen = GREATEST(stream_state.max_seen, EXCLUDED.max_seen),
             last_event_ms = GREATEST(stream_state.last_event_ms, EXCLUDED.last_event_ms), updated_at = now()",
    )
    .bind(stream.as_str())
    .bind(states.iter().map(|s| s.0.clone()).collect::<Vec<_>>())
    .bind(states.iter().map(|s| s.1).collect::<Vec<_>>())
    .bind(states.iter().map(|s| s.2).collect::<Vec<_>>())
    .execute(tx)
    .await
    .map(|_| ())
}

pub async fn open_gap(
    tx: &mut PgConnection,
    symbol: &str,
    stream: Stream,
    gap: &Gap,
    cause: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar("INSERT INTO gaps (symbol, stream, first_missing, last_missing, cause) VALUES ($1, $2, $3, $4, $5) RETURNING id")
        .bind(symbol)
        .bind(stream.as_str())
        .bind(gap.first)
        .bind(gap.last)
        .bind(cause)
        .fetch_one(tx)
        .await
}

/// Closes a gap; returns how long it was open, in seconds.
pub async fn heal_gap(tx: &mut PgConnection, id: i64) -> sqlx::Result<f64> {
    sqlx::query_scalar(
        "UPDATE gaps SET healed_at = now(), heal_seconds = EXTRACT(EPOCH FROM now() - opened_at)::float8
         WHERE id = $1 RETURNING heal_seconds",
    )
    .bind(id)
    .fetch_one(tx)
    .await
}

pub async fn count_request(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE gaps SET backfill_requests = backfill_requests + 1 WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Stored continuity state: (symbol, stream, max_seen, last_event_ms).
pub async fn load_states(pool: &PgPool) -> sqlx::Result<Vec<(String, String, i64, i64)>> {
    sqlx::query_as("SELECT symbol, stream, max_seen, last_event_ms FROM stream_state")
        .fetch_all(pool)
        .await
}

/// The raw trade id (`l`) of each symbol's highest stored aggregate trade (one primary-key
/// lookup per symbol, through the stream state).
pub async fn load_last_trade_ids(pool: &PgPool) -> sqlx::Result<HashMap<String, u64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.symbol, a.last_trade_id FROM stream_state s
           JOIN aggtrades a ON a.symbol = s.symbol AND a.agg_id = s.max_seen
          WHERE s.stream = 'aggTrade'",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(symbol, id)| (symbol, id.max(0).unsigned_abs()))
        .collect())
}

/// Open gaps with the keys that are still missing from the tables.
pub async fn load_open_gaps(
    pool: &PgPool,
    step_of: impl Fn(&str) -> i64,
) -> sqlx::Result<Vec<(String, String, Gap)>> {
    let rows: Vec<(i64, String, String, i64, i64)> =
        sqlx::query_as("SELECT id, symbol, stream, first_missing, last_missing FROM gaps WHERE healed_at IS NULL ORDER BY id").fetch_all(pool).await?;
    let mut gaps = Vec::new();
    for (id, symbol, stream, first, last) in rows {
        let present: Vec<i64> = if stream == Stream::AggTrade.as_str() {
            sqlx::query_scalar("SELECT agg_id FROM aggtrades WHERE symbol = $1 AND agg_id BETWEEN $2 AND $3 ORDER BY agg_id")
        } else {
            sqlx::query_scalar("SELECT open_time_ms FROM klines WHERE symbol = $1 AND open_time_ms BETWEEN $2 AND $3 ORDER BY open_time_ms")
        }
        .bind(&symbol)
        .bind(first)
        .bind(last)
        .fetch_all(pool)
        .await?;
        let step = step_of(&stream);
        let mut gap = Gap::new(first, last);
        gap.id = id;
        gap.missing = missing_ranges(first, last, step, &present);
        gaps.push((symbol, stream, gap));
    }
    Ok(gaps)
}

/// The ranges of `first..=last` (in steps) not in the sorted `present`.
pub fn missing_ranges(first: i64, last: i64, step: i64, present: &[i64]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut next = first;
    for &k in present {
        if k > next {
            out.push((next, k - step));
        }
        next = next.max(k + step);
    }
    if next <= last {
        out.push((next, last));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ranges_are_the_complement_of_what_is_present() {
        assert_eq!(missing_ranges(1, 10, 1, &[]), vec![(1, 10)]);
        assert_eq!(
            missing_ranges(1, 10, 1, &[1, 2, 5, 10]),
            vec![(3, 4), (6, 9)]
        );
        assert_eq!(missing_ranges(0, 180, 60, &[60]), vec![(0, 0), (120, 180)]);
        assert!(missing_ranges(1, 3, 1, &[1, 2, 3]).is_empty());
    }

    #[test]
    fn copy_rows_escape_what_copy_text_format_reads_specially() {
        let mut out = String::new();
        super::copy_row(&mut out, &["BTCUSDT", "1", "t"]);
        super::copy_row(&mut out, &["a\tb", "c\\d", "e\nf\rg"]);
        assert_eq!(out, "BTCUSDT\t1\tt\na\\tb\tc\\\\d\te\\nf\\rg\n");
    }
}
