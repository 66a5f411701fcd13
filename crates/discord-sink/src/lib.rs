//! discord-sink: a Discord-compatible webhook receiver for tests and offline demos.
//!
//! It records every POST to `/api/webhooks/{id}/{token}`, checks it against Discord's
//! message limits, and answers as Discord does: 204 when accepted, 400 with Discord's error
//! body when the payload breaks a limit, or 429 with `retry_after` while told to rate-limit.
//! Control: `GET /sink/messages`, `DELETE /sink/messages`, `POST /sink/mode`. It also
//! takes the Watchdog's heartbeat webhook (`POST /watchdog`) and the failure ping of a dead
//! man's switch (`POST /watchdog/fail`, as healthchecks.io's `<ping URL>/fail`), both counted
//! at `GET /sink/watchdog`.
//!
//! It is a test double of Discord's webhook API, never part of the production path.
#![forbid(unsafe_code)]

pub mod server;
pub mod validate;

pub use server::{serve, Sink};
pub use validate::validate;
