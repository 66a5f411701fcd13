//! Binance's REST request-weight limit, per client IP, in fixed windows (one minute by
//! default, aligned like Binance's): a request that would cross the limit gets 429 with
//! `Retry-After` until the window ends; a client that keeps sending after 429s
//! (`ban_after` more in the same window) is banned with 418 for `ban`.
//! Time is passed in (wall-clock milliseconds, so windows align to the minute as
//! Binance's do), so tests drive it.

use std::collections::HashMap;
use std::net::IpAddr;

#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub weight_limit: u32,
    pub window_ms: u64,
    pub ban_after: u32,
    pub ban_ms: u64,
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow {
        used: u32,
    },
    /// 429: over the limit until the window ends.
    Limited {
        used: u32,
        retry_after_secs: u64,
    },
    /// 418: banned for going on after 429s.
    Banned {
        used: u32,
        retry_after_secs: u64,
    },
}

#[derive(Debug, Default, Clone)]
struct Client {
    window: u64,
    used: u32,
    violations: u32,
    banned_until_ms: u64,
}

/// A status forced by the control API for a period, whatever the weight.
#[derive(Debug, Clone, Copy)]
struct Forced {
    status: u16,
    until_ms: u64,
}

#[derive(Debug)]
pub struct Limiter {
    config: LimitConfig,
    clients: HashMap<IpAddr, Client>,
    forced: Option<Forced>,
}

fn secs_until(now_ms: u64, until_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms).div_ceil(1000).max(1)
}

impl Limiter {
    pub fn new(config: LimitConfig) -> Self {
        Self {
            config,
            clients: HashMap::new(),
            forced: None,
        }
    }

    pub fn limit(&self) -> u32 {
        self.config.weight_limit
    }

    pub fn set_limit(&mut self, limit: u32) {
        self.config.weight_limit = limit;
    }

    /// Answers every request with `status` (429 or 418) until `until_ms`.
    pub fn force(&mut self, status: u16, until_ms: u64) {
        self.forced = Some(Forced { status, until_ms });
    }

    pub fn clear_forced(&mut self) {
        self.forced = None;
    }

    /// Weight used in the current window by `ip` (for the header of any response).
    pub fn used(&self, ip: IpAddr, now_ms: u64) -> u32 {
        let window = now_ms / self.config.window_ms;
        self.clients
            .get(&ip)
            .filter(|c| c.window == window)
            .map_or(0, |c| c.used)
    }

    /// Decides one request of `weight` from `ip` at `now_ms`.
    pub fn check(&mut self, ip: IpAddr, weight: u32, now_ms: u64) -> Decision {
        let window = now_ms / self.config.window_ms;
        let window_end = window
            .saturating_add(1)
            .saturating_mul(self.config.window_ms);
        let (limit, ban_after, ban_ms) = (
            self.config.weight_limit,
            self.config.ban_after,
            self.config.ban_ms,
        );
        let forced = self.forced.filter(|f| now_ms < f.until_ms);
        let client = self.clients.entry(ip).or_default();
        if client.window != window {
            *client = Client {
                window,
                banned_until_ms: client.banned_until_ms,
                ..Client::default()
            };
        }
        if now_ms < client.banned_until_ms {
            return Decision::Banned {
                used: client.used,
                retry_after_secs: secs_until(now_ms, client.banned_until_ms),
            };
        }
        if let Some(f) = forced {
            let retry_after_secs = secs_until(now_ms, f.until_ms);
            return match f.status {
                418 => Decision::Banned {
                    used: client.used,
                    retry_after_secs,
                },
                _ => Decision::Limited {
                    used: client.used,
                    retry_after_secs,
                },
            };
        }
        let Some(used) = client.used.checked_add(weight).filter(|&u| u <= limit) else {
            client.violations = client.violations.saturating_add(1);
            if client.violations > ban_after {
                client.banned_until_ms = now_ms.saturating_add(ban_ms);
                return Decision::Banned {
                    used: client.used,
                    retry_after_secs: secs_until(now_ms, client.banned_until_ms),
                };
            }
            return Decision::Limited {
                used: client.used,
                retry_after_secs: secs_until(now_ms, window_end),
            };
        };
        client.used = used;
        Decision::Allow { used }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn limiter() -> Limiter {
        Limiter::new(LimitConfig {
            weight_limit: 10,
            window_ms: 60_000,
            ban_after: 2,
            ban_ms: 120_000,
        })
    }

    #[test]
    fn weight_accumulates_then_429_until_the_window_ends() {
        let mut l = limiter();
        assert_eq!(l.check(IP, 4, 1_000), Decision::Allow { used: 4 });
        assert_eq!(l.check(IP, 4, 2_000), Decision::Allow { used: 8 });
        assert_eq!(
            l.check(IP, 4, 30_000),
            Decision::Limited {
                used: 8,
                retry_after_secs: 30
            }
        );
        assert_eq!(
            l.check(IP, 2, 30_500),
            Decision::Allow { used: 10 },
            "a lighter request still fits"
        );
        assert_eq!(
            l.check(IP, 4, 60_000),
            Decision::Allow { used: 4 },
            "a new window starts empty"
        );
        assert_eq!(l.used(IP, 60_001), 4);
    }

    #[test]
    fn going_on_after_429s_escalates_to_a_418_ban() {
        let mut l = limiter();
        l.check(IP, 10, 0);
        assert!(matches!(l.check(IP, 1, 1), Decision::Limited { .. }));
        assert!(matches!(l.check(IP, 1, 2), Decision::Limited { .. }));
        assert_eq!(
            l.check(IP, 1, 3),
            Decision::Banned {
                used: 10,
                retry_after_secs: 120
            }
        );
        assert!(
            matches!(
                l.check(IP, 1, 90_000),
                Decision::Banned {
                    retry_after_secs: 31,
                    ..
                }
            ),
            "ban outlives the window"
        );
        assert_eq!(l.check(IP, 1, 120_003), Decision::Allow { used: 1 });
    }

    #[test]
    fn forced_statuses_apply_for_their_period() {
        let mut l = limiter();
        l.force(418, 5_000);
        assert_eq!(
            l.check(IP, 1, 1_000),
            Decision::Banned {
                used: 0,
                retry_after_secs: 4
            }
        );
        l.force(429, 7_000);
        assert!(matches!(
            l.check(IP, 1, 6_000),
            Decision::Limited {
                retry_after_secs: 1,
                ..
            }
        ));
        assert_eq!(l.check(IP, 1, 7_000), Decision::Allow { used: 1 });
    }

    #[test]
    fn extreme_limits_windows_and_bans_saturate() {
        let mut l = Limiter::new(LimitConfig {
            weight_limit: u32::MAX,
            window_ms: u64::MAX,
            ban_after: 0,
            ban_ms: u64::MAX,
        });
        assert_eq!(l.check(IP, u32::MAX, 1), Decision::Allow { used: u32::MAX });
        assert!(
            matches!(l.check(IP, 250, u64::MAX - 1), Decision::Banned { .. }),
            "used + weight past u32::MAX is over the limit"
        );
        assert!(
            matches!(
                l.check(IP, 1, u64::MAX - 1),
                Decision::Banned {
                    retry_after_secs: 1,
                    ..
                }
            ),
            "a ban to the end of time"
        );
        let mut forced = limiter();
        forced.force(429, u64::MAX);
        assert!(
            matches!(forced.check(IP, 1, 0), Decision::Limited { retry_after_secs, .. } if retry_after_secs == u64::MAX.div_ceil(1000))
        );
    }
}
