//! Which symbols this collector collects: the configured list, or every USDT pair trading
//! now (`SYMBOLS=ALL_USDT`, from exchangeInfo); of those, the ones this replica owns when
//! several collectors split the work (`COLLECTOR_REPLICA` of `COLLECTOR_REPLICAS`).
//!
//! Ownership is a stable hash of the name, not a position in the list, so a symbol listed
//! or delisted moves no other symbol to another replica. Every replica sees every
//! back-fill request (a consumer group each) and serves only its own symbols.

use crate::governor::Class;
use crate::rest::{BinanceRest, RestError, EXCHANGE_INFO};

/// The `SYMBOLS` value that asks for every USDT pair trading now.
pub const ALL_USDT: &str = "ALL_USDT";

/// Why the symbols could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SymbolsError {
    #[error(transparent)]
    Rest(#[from] RestError),
    #[error("exchangeInfo lists no symbols")]
    NoList,
    #[error("replica {replica} of {replicas} owns none of the {count} symbols")]
    NoneOwned {
        replica: u32,
        replicas: u32,
        count: usize,
    },
}

/// FNV-1a of the name: stable across runs, builds and platforms.
fn stable_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether replica `replica` of `replicas` owns `symbol`.
pub fn owns(symbol: &str, replica: u32, replicas: u32) -> bool {
    stable_hash(symbol) % u64::from(replicas.max(1)) == u64::from(replica)
}

/// The configured symbols, `ALL_USDT` expanded from exchangeInfo (weight 20, once), then
/// only those this replica owns.
pub async fn resolve(
    rest: &BinanceRest,
    configured: &[String],
    replica: u32,
    replicas: u32,
) -> Result<Vec<String>, SymbolsError> {
    let all = if configured == [ALL_USDT] {
        let body = rest.get(Class::Info, EXCHANGE_INFO, &[]).await?;
        market::rest::parse_trading_symbols(&body, "USDT").ok_or(SymbolsError::NoList)?
    } else {
        configured.to_vec()
    };
    let owned: Vec<String> = all
        .iter()
        .filter(|s| owns(s, replica, replicas))
        .cloned()
        .collect();
    if owned.is_empty() {
        return Err(SymbolsError::NoneOwned {
            replica,
            replicas,
            count: all.len(),
        });
    }
    tracing::info!(
        total = all.len(),
        owned = owned.len(),
        replica,
        replicas,
        "symbols resolved"
    );
    Ok(owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_symbol_has_exactly_one_owner_and_keeps_it() {
        let names: Vec<String> = (0..400).map(|i| format!("S{i:03}USDT")).collect();
        for replicas in [1, 2, 3, 5] {
            let mut sizes = vec![0; replicas as usize];
            for n in &names {
                let owners: Vec<u32> = (0..replicas).filter(|r| owns(n, *r, replicas)).collect();
                assert_eq!(owners.len(), 1, "{n} with {replicas} replicas: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            let fair = 400 / replicas as usize;
            assert!(
                sizes.iter().all(|s| s * 10 > fair * 7),
                "an even enough split over {replicas}: {sizes:?}"
            );
        }
        assert_eq!(stable_hash("BTCUSDT"), stable_hash("BTCUSDT"));
        assert_eq!(
            stable_hash(""),
            0xcbf2_9ce4_8422_2325,
            "FNV-1a's offset basis"
        );
        assert_eq!(stable_hash("a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a of \"a\"");
    }
}
