//! `schema.graphql` is printed from the code; this fails when the checked-in copy drifts.

#[test]
fn checked_in_schema_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    let printed = gateway::schema_sdl();
    assert!(
        checked_in == printed,
        "schema.graphql is out of date: run `cargo run -p gateway -- schema > schema.graphql` and commit it"
    );
}
