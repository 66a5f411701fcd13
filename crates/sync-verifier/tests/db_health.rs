//! PostgreSQL health as sync-verifier exports it: `postgres_up` 0 and a counted error when
//! the database does not answer (no database needed), and real sizes from the native
//! stack's PostgreSQL (ignored in plain `cargo test`; `make test` runs it).

use sqlx::postgres::PgPoolOptions;
use std::time::Duration;
use sync_verifier::dbstats::{self, DbMetrics};
use tokio_util::sync::CancellationToken;

use kit::testing::until;

const SEC: Duration = Duration::from_secs(1);
const ADMIN_URL: &str = "postgres://nghenhan:nghenhan@127.0.0.1:5432/nghenhan";

fn start(url: &str) -> (DbMetrics, kit::Telemetry, CancellationToken) {
    let telemetry = kit::Telemetry::new("sync-verifier", "test").expect("telemetry");
    let metrics = DbMetrics::register(telemetry.registry()).expect("metrics");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(1))
        .connect_lazy(url)
        .expect("pool");
    let stop = CancellationToken::new();
    tokio::spawn(dbstats::run(
        pool,
        metrics.clone(),
        Duration::from_millis(100),
        telemetry.clone(),
        stop.clone(),
    ));
    (metrics, telemetry, stop)
}

#[tokio::test]
async fn an_unreachable_database_reads_down_and_counts_errors() {
    // Nothing listens on port 1.
    let (m, telemetry, stop) = start("postgres://nghenhan:x@127.0.0.1:1/nghenhan");
    assert_eq!(m.up.get(), 0, "down until a read succeeds");
    until("two failed reads counted", 30 * SEC, async || {
        telemetry.error_count(kit::contract::ErrorKind::DbStats) >= 2
    })
    .await;
    assert_eq!(m.up.get(), 0);
    assert_eq!(m.pool.with_label_values(&["max"]).get(), 2);
    stop.cancel();
}

#[tokio::test]
#[ignore = "needs the native stack's PostgreSQL; `make test` runs it"]
async fn the_stacks_database_reads_up_with_its_sizes() {
    let admin = sqlx::PgPool::connect(ADMIN_URL).await.expect("admin");
    let db = format!("dbhealth_{}", std::process::id());
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute(&admin)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await
        .expect("create");
    let url = format!("postgres://nghenhan:nghenhan@127.0.0.1:5432/{db}");
    let own = sqlx::PgPool::connect(&url).await.expect("own database");
    sqlx::query("CREATE TABLE filler AS SELECT g AS n, repeat('x', 200) AS pad FROM generate_series(1, 5000) g")
        .execute(&own)
        .await
        .expect("filler");
    let (m, telemetry, stop) = start(&url);
    until("the database reads up", 30 * SEC, async || m.up.get() == 1).await;
    let reading = dbstats::read(&own).await.expect("read");
    let filler = reading
        .tables
        .iter()
        .find(|(t, _)| t == "filler")
        .map(|(_, b)| *b)
        .expect("the filler table is listed");
    assert!(
        filler > 5000 * 200,
        "5 000 rows of 200 bytes: {filler} bytes"
    );
    assert!(reading.database_bytes > filler);
    until("the gauges show the sizes", 30 * SEC, async || {
        m.table_size.with_label_values(&["filler"]).get() == filler
            && m.database_size.get() > filler
    })
    .await;
    assert_eq!(telemetry.error_count(kit::contract::ErrorKind::DbStats), 0);
    stop.cancel();
    own.close().await;
    sqlx::query(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .execute(&admin)
        .await
        .expect("drop");
}
