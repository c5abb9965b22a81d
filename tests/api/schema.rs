//! `schema.graphql` is what `credits schema` prints; a stale copy fails here.

use std::process::Command;

#[test]
fn committed_schema_matches_the_code() {
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).expect("schema.graphql");
    let generated = format!("{}\n", credits::graphql::sdl());
    assert!(committed == generated, "schema.graphql is stale: run `cargo run -- schema > schema.graphql`");
}

#[test]
fn credits_schema_prints_the_committed_schema() {
    let output = Command::new(env!("CARGO_BIN_EXE_credits")).arg("schema").output().expect("run credits schema");
    assert!(output.status.success());
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).expect("schema.graphql");
    assert_eq!(String::from_utf8_lossy(&output.stdout), committed);
}
