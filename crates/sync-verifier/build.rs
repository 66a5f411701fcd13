//! The `db` cfg: set when DATABASE_URL is given at build time (`make test` gives the test
//! stack's). The database tests (tests/store.rs, `#[sqlx::test]`: a fresh database each,
//! migrated) then run; without it they are ignored, with a reason, in plain `cargo test`.
fn main() {
    println!("cargo:rustc-check-cfg=cfg(db)");
    println!("cargo:rerun-if-env-changed=DATABASE_URL");
    if std::env::var_os("DATABASE_URL").is_some_and(|v| !v.is_empty()) {
        println!("cargo:rustc-cfg=db");
    }
}
