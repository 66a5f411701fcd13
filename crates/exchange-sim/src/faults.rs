//! Fault injection state, set through the control API (`/sim/...`) and read by the engine
//! (dropped stream messages) and the WebSocket sessions (stalls, latency). Dropped
//! messages are only withheld from the streams: the trades exist, so REST back-fill and
//! `/sim/truth` still return them. Time is real monotonic milliseconds.

use serde::Deserialize;

/// Which stream kind a rule or event concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamKind {
    AggTrade,
    Kline,
    Depth,
}

/// `POST /sim/drop`: withhold stream messages, the next `count` of them or all for
/// `duration_ms`, optionally only one symbol's or one stream kind's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DropRule {
    pub symbol: Option<String>,
    pub stream: Option<StreamKind>,
    pub count: Option<u64>,
    pub duration_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct ActiveDrop {
    rule: DropRule,
    until_ms: Option<u64>,
}

#[derive(Debug, Default)]
pub struct Faults {
    drops: Vec<ActiveDrop>,
    stall_until_ms: u64,
    ws_refused_until_ms: u64,
    pub rest_latency_ms: u64,
    pub ws_latency_ms: u64,
}

impl Faults {
    pub fn add_drop(&mut self, rule: DropRule, now_ms: u64) {
        let until_ms = rule.duration_ms.map(|d| now_ms.saturating_add(d));
        self.drops.push(ActiveDrop { rule, until_ms });
    }

    /// Whether to withhold one message; a counted rule is used up by the messages it drops.
    pub fn should_drop(&mut self, symbol: &str, kind: StreamKind, now_ms: u64) -> bool {
        self.drops
            .retain(|d| d.until_ms.is_none_or(|u| now_ms < u) && d.rule.count != Some(0));
        let hit = self.drops.iter_mut().find(|d| {
            d.rule
                .symbol
                .as_deref()
                .is_none_or(|s| s.eq_ignore_ascii_case(symbol))
                && d.rule.stream.is_none_or(|k| k == kind)
        });
        match hit {
            Some(d) => {
                if let Some(c) = d.rule.count.as_mut() {
                    *c = c.saturating_sub(1);
                }
                true
            }
            None => false,
        }
    }

    /// Stalls every stream (no data, no pings, sockets stay open) until `now + duration`.
    pub fn stall(&mut self, now_ms: u64, duration_ms: u64) {
        self.stall_until_ms = now_ms.saturating_add(duration_ms);
    }

    pub fn stalled(&self, now_ms: u64) -> bool {
        now_ms < self.stall_until_ms
    }

    /// Refuses WebSocket upgrades (503) until `now + duration`: the exchange unreachable
    /// for streams, as in a regional block or an outage.
    pub fn refuse_ws(&mut self, now_ms: u64, duration_ms: u64) {
        self.ws_refused_until_ms = now_ms.saturating_add(duration_ms);
    }

    pub fn ws_refused(&self, now_ms: u64) -> bool {
        now_ms < self.ws_refused_until_ms
    }

    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        symbol: Option<&str>,
        stream: Option<StreamKind>,
        count: Option<u64>,
        duration_ms: Option<u64>,
    ) -> DropRule {
        DropRule {
            symbol: symbol.map(String::from),
            stream,
            count,
            duration_ms,
        }
    }

    #[test]
    fn counted_drops_are_used_up_and_filtered_by_symbol_and_stream() {
        let mut f = Faults::default();
        f.add_drop(
            rule(Some("BTCUSDT"), Some(StreamKind::AggTrade), Some(2), None),
            0,
        );
        assert!(!f.should_drop("ETHUSDT", StreamKind::AggTrade, 1));
        assert!(!f.should_drop("BTCUSDT", StreamKind::Kline, 1));
        assert!(f.should_drop("btcusdt", StreamKind::AggTrade, 1));
        assert!(f.should_drop("BTCUSDT", StreamKind::AggTrade, 1));
        assert!(!f.should_drop("BTCUSDT", StreamKind::AggTrade, 1));
    }

    #[test]
    fn a_ws_outage_ends() {
        let mut f = Faults::default();
        assert!(!f.ws_refused(0));
        f.refuse_ws(100, 1_000);
        assert!(f.ws_refused(1_099));
        assert!(!f.ws_refused(1_100));
        f.refuse_ws(0, u64::MAX);
        assert!(f.ws_refused(u64::MAX - 1), "saturates, no overflow");
    }

    #[test]
    fn timed_drops_and_stalls_end() {
        let mut f = Faults::default();
        f.add_drop(rule(None, None, None, Some(1_000)), 100);
        assert!(f.should_drop("X", StreamKind::Depth, 1_099));
        assert!(!f.should_drop("X", StreamKind::Depth, 1_100));
        f.stall(0, 500);
        assert!(f.stalled(499) && !f.stalled(500));
    }

    #[test]
    fn the_longest_periods_saturate_instead_of_overflowing() {
        let mut f = Faults::default();
        f.add_drop(rule(None, None, None, Some(u64::MAX)), u64::MAX - 1);
        assert!(
            f.should_drop("X", StreamKind::AggTrade, u64::MAX - 1),
            "a drop that ends at the end of time still drops"
        );
        f.stall(u64::MAX - 5, u64::MAX);
        assert!(f.stalled(u64::MAX - 1));
        f.add_drop(rule(None, None, Some(0), None), 0);
        f.reset();
        f.add_drop(rule(None, None, Some(1), None), 0);
        assert!(f.should_drop("X", StreamKind::Kline, 0));
        assert!(
            !f.should_drop("X", StreamKind::Kline, 0),
            "a used-up count is gone, not wrapped to u64::MAX"
        );
    }
}
