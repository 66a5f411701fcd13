//! verify + persist rate of sync-verifier against a raw COPY of the same rows, measured in
//! the same run on the same PostgreSQL (a database of the bench's own, dropped after).
//! Run: `make bench` (it starts PostgreSQL).

use market::{AggTrade, Source};
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Instant;
use sync_verifier::verifier::{Input, Verifier};

const N: usize = 100_000;
const BATCH: usize = 2_000;
const ADMIN_URL: &str = "postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan";

fn trades() -> Vec<AggTrade> {
    (0..N)
        .map(|i| AggTrade {
            v: 1,
            symbol: "BTCUSDT".into(),
            agg_id: 1_000_000 + i as u64,
            price: format!("{}.{:08}", 60_000 + i % 500, i % 100),
            qty: format!("0.{:08}", 1_000 + i % 9_000),
            first_trade_id: 2_000_000 + i as u64,
            last_trade_id: 2_000_000 + i as u64,
            trade_time_ms: 1_700_000_000_000 + i as i64,
            buyer_is_maker: i % 2 == 0,
            event_time_ms: Some(1_700_000_000_000 + i as i64),
            received_at_ms: 1_700_000_000_000 + i as i64,
            source: Source::Ws,
        })
        .collect()
}

async fn raw_copy(conn: &mut PgConnection, rows: &[AggTrade]) -> anyhow::Result<f64> {
    sqlx::query("CREATE TABLE copy_target (LIKE aggtrades INCLUDING ALL)")
        .execute(&mut *conn)
        .await?;
    let mut csv = String::with_capacity(rows.len() * 96);
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            r.symbol,
            r.agg_id,
            r.price,
            r.qty,
            r.first_trade_id,
            r.last_trade_id,
            r.trade_time_ms,
            r.buyer_is_maker,
            r.source.as_str(),
            r.received_at_ms
        ));
    }
    let start = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY copy_target (symbol, agg_id, price, qty, first_trade_id, last_trade_id, trade_time_ms, buyer_is_maker, source, received_at_ms) FROM STDIN WITH (FORMAT csv)")
        .await?;
    copy.send(csv.as_bytes()).await?;
    copy.finish().await?;
    Ok(rows.len() as f64 / start.elapsed().as_secs_f64())
}

async fn verify_persist(pool: &PgPool, rows: &[AggTrade]) -> anyhow::Result<f64> {
    let mut verifier = Verifier::default();
    let start = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let inputs: Vec<Input> = chunk.iter().cloned().map(Input::Agg).collect();
        let mut tx = pool.begin().await?;
        let (work, _) = verifier
            .apply(&mut tx, &inputs, kit::time::now_ms())
            .await?;
        tx.commit().await?;
        verifier.commit(work, &inputs);
    }
    Ok(rows.len() as f64 / start.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let db = format!("bench_{}", std::process::id());
    let mut admin = PgConnection::connect(ADMIN_URL).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await?;
    let url = format!("postgres://nghenhan:nghenhan@127.0.0.1:5432/{db}");
    let pool = PgPool::connect(&url).await?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    let rows = trades();
    let raw = raw_copy(&mut *pool.acquire().await?, &rows).await?;
    let ours = verify_persist(&pool, &rows).await?;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM aggtrades")
        .fetch_one(&pool)
        .await?;
    println!("sync-verifier persist bench ({N} aggregate trades, batches of {BATCH})");
    println!("  raw COPY                      {raw:>10.0} rows/s");
    println!("  verify + persist              {ours:>10.0} rows/s");
    println!("  ratio verifier/COPY            {:.3}", ours / raw);
    // figures first; then the checks and the clean-up
    assert_eq!(stored as usize, N, "every row persisted");
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await?;
    Ok(())
}
