//! store.rs and `Verifier::apply` against a real PostgreSQL: each test gets a database of
//! its own, migrated (`#[sqlx::test]`, from DATABASE_URL). `make test` sets DATABASE_URL to
//! the test stack's PostgreSQL; without it these are ignored (see build.rs).

use market::{AggTrade, Kline, Source, Stream};
use sqlx::PgPool;
use sync_verifier::store;
use sync_verifier::verifier::{Input, Verifier};

const SYMBOL: &str = "DBTESTUSDT";
const NOW: i64 = 1_790_000_000_000;

fn agg(id: u64, price: &str) -> AggTrade {
    AggTrade {
        v: 1,
        symbol: SYMBOL.into(),
        agg_id: id,
        price: price.into(),
        qty: "0.5".into(),
        first_trade_id: id * 2,
        last_trade_id: id * 2 + 1,
        trade_time_ms: NOW - 60_000 + i64::try_from(id).expect("small"),
        buyer_is_maker: id.is_multiple_of(2),
        event_time_ms: None,
        received_at_ms: NOW,
        source: Source::Ws,
    }
}

fn kline(open: i64, close_price: &str) -> Kline {
    Kline {
        v: 1,
        symbol: SYMBOL.into(),
        interval: market::rest::KLINE_INTERVAL.into(),
        open_time_ms: open,
        close_time_ms: open + market::rest::KLINE_MS - 1,
        open: "1".into(),
        high: "2".into(),
        low: "0.5".into(),
        close: close_price.into(),
        volume: "10".into(),
        quote_volume: "15".into(),
        trades: 3,
        taker_buy_base: "4".into(),
        taker_buy_quote: "6".into(),
        first_trade_id: None,
        last_trade_id: None,
        event_time_ms: None,
        received_at_ms: NOW,
        source: Source::Ws,
    }
}

/// Applies one batch in a transaction and commits it, as the pipeline does.
async fn apply(
    pool: &PgPool,
    v: &mut Verifier,
    batch: &[Input],
) -> sync_verifier::verifier::Outcome {
    let mut tx = pool.begin().await.expect("begin");
    let (work, outcome) = v.apply(&mut tx, batch, NOW).await.expect("apply");
    tx.commit().await.expect("commit");
    v.commit_at(work, batch, NOW);
    outcome
}

#[cfg_attr(not(db), ignore = "needs DATABASE_URL (make test sets it)")]
#[sqlx::test]
async fn trades_are_stored_once_and_read_back_exactly(pool: PgPool) {
    // one transaction, as the verifier writes: the second insert meets a stored row, so its
    // direct COPY is rolled back to the savepoint and the rows go through the stage
    let mut conn = pool.begin().await.expect("transaction");
    let first = store::insert_aggs(&mut conn, &[agg(1, "10.00000001"), agg(2, "10.5")])
        .await
        .expect("insert");
    assert_eq!(
        first,
        vec![(SYMBOL.to_string(), 1), (SYMBOL.to_string(), 2)]
    );
    let again = store::insert_aggs(&mut conn, &[agg(2, "10.5"), agg(3, "11")])
        .await
        .expect("insert");
    assert_eq!(
        again,
        vec![(SYMBOL.to_string(), 3)],
        "a stored trade is not inserted twice"
    );
    let stored = store::stored_aggs(&mut conn, SYMBOL, &[1, 2, 3])
        .await
        .expect("read");
    assert_eq!(stored.len(), 3);
    assert!(
        stored.iter().any(|a| a.same_data(&agg(1, "10.00000001"))),
        "exact decimals survive: {stored:?}"
    );
}

#[cfg_attr(not(db), ignore = "needs DATABASE_URL (make test sets it)")]
#[sqlx::test]
async fn klines_state_and_the_gap_ledger_round_trip(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let open = NOW - NOW % 60_000 - 120_000;
    let new = store::insert_klines(
        &mut conn,
        &[kline(open, "1.5"), kline(open + 60_000, "1.6")],
    )
    .await
    .expect("insert");
    assert_eq!(new.len(), 2);
    assert!(store::insert_klines(&mut conn, &[kline(open, "1.5")])
        .await
        .expect("again")
        .is_empty());
    let state = |max: i64, at: i64| (SYMBOL.to_string(), max, at);
    let other = ("OTHERUSDT".to_string(), 3, NOW);
    store::save_states(
        &mut conn,
        Stream::AggTrade,
        &[state(10, NOW), other.clone()],
    )
    .await
    .expect("states");
    store::save_states(&mut conn, Stream::AggTrade, &[state(7, NOW - 1)])
        .await
        .expect("older state");
    store::save_states(&mut conn, Stream::AggTrade, &[])
        .await
        .expect("nothing to save");
    let mut states = store::load_states(&pool).await.expect("states");
    states.sort();
    assert_eq!(
        states,
        vec![
            (SYMBOL.to_string(), "aggTrade".to_string(), 10, NOW),
            ("OTHERUSDT".to_string(), "aggTrade".to_string(), 3, NOW),
        ],
        "every state saved in one statement, and a state never goes back"
    );

    let gap = sync_verifier::continuity::Gap::new(5, 9);
    let id = store::open_gap(&mut conn, SYMBOL, Stream::AggTrade, &gap, "test")
        .await
        .expect("gap");
    let mut tx = pool.begin().await.expect("transaction");
    store::insert_aggs(&mut tx, &[agg(6, "1"), agg(7, "1")])
        .await
        .expect("part of the hole");
    tx.commit().await.expect("commit");
    let open_gaps = store::load_open_gaps(&pool, |_| 1).await.expect("gaps");
    assert_eq!(open_gaps.len(), 1);
    assert_eq!(
        open_gaps[0].2.missing,
        vec![(5, 5), (8, 9)],
        "what is still missing, from the tables"
    );
    store::count_request(&pool, id).await.expect("count");
    let secs = store::heal_gap(&mut conn, id).await.expect("heal");
    assert!(secs >= 0.0);
    assert!(store::load_open_gaps(&pool, |_| 1)
        .await
        .expect("gaps")
        .is_empty());
}

#[cfg_attr(not(db), ignore = "needs DATABASE_URL (make test sets it)")]
#[sqlx::test]
async fn apply_opens_a_gap_for_a_hole_heals_it_with_the_backfill_and_counts_a_mismatch(
    pool: PgPool,
) {
    let mut v = Verifier::default();
    let out = apply(
        &pool,
        &mut v,
        &[Input::Agg(agg(1, "10")), Input::Agg(agg(2, "10"))],
    )
    .await;
    assert_eq!(out.persisted.get(&Stream::AggTrade), Some(&2));
    assert!(out.opened.is_empty());

    let out = apply(&pool, &mut v, &[Input::Agg(agg(6, "10"))]).await;
    assert_eq!(
        out.opened,
        vec![(SYMBOL.to_string(), Stream::AggTrade)],
        "ids 3..5 are missing"
    );
    assert_eq!(out.requests.len(), 1, "and asked for: {:?}", out.requests);
    let open = store::load_open_gaps(&pool, |_| 1).await.expect("gaps");
    assert_eq!(open[0].2.missing, vec![(3, 5)]);

    let mut backfill: Vec<Input> = (3..=5)
        .map(|id| {
            Input::Agg(AggTrade {
                source: Source::Backfill,
                ..agg(id, "10")
            })
        })
        .collect();
    let out = apply(&pool, &mut v, &backfill).await;
    assert_eq!(out.healed.len(), 1, "the back-fill heals it");
    assert!(store::load_open_gaps(&pool, |_| 1)
        .await
        .expect("gaps")
        .is_empty());

    backfill.truncate(1);
    let out = apply(&pool, &mut v, &backfill).await;
    assert_eq!(
        out.duplicates.get(&Stream::AggTrade),
        Some(&1),
        "the same trade again is a duplicate"
    );
    let out = apply(&pool, &mut v, &[Input::Agg(agg(4, "99"))]).await;
    assert_eq!(
        out.mismatches.get(&Stream::AggTrade),
        Some(&1),
        "a different price for a stored id is a mismatch"
    );
    let stored = store::stored_aggs(&mut pool.acquire().await.expect("conn"), SYMBOL, &[4])
        .await
        .expect("read");
    assert_eq!(stored[0].price, "10", "the first version stays");
}
