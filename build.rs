// `sqlx::migrate!()` (src/store/migrate.rs, and `#[sqlx::test]` in
// tests/api) embeds migrations/ when the crate compiles; without this, a new
// migration file alone does not make cargo rebuild, and the binaries and
// tests go on with the old set.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
