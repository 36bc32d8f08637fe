//! Generated input: a real gateway (on SQLite, or on PostgreSQL with `TEST_DATABASE_URL`)
//! receives a few thousand malformed requests — random and garbled bodies, mistyped fields,
//! mutated and crafted GraphQL documents, hostile variables, persisted-query extensions,
//! odd query strings, methods and headers — with eight in flight at a time. Every answer must
//! be below 500, JSON (GraphiQL's HTML only where a browser asks for it), with a known
//! `extensions.code` on every error (never `INTERNAL`), without internal details, and the
//! gateway must keep serving: a health query after every batch, and at the end.
//!
//! The generator is deterministic: case `i` of a run is made from the seed and `i` alone, so
//! a failure names its seed and case, and one case can be replayed on its own:
//!
//! ```sh
//! FUZZ_SEED=<seed> FUZZ_CASE=<index> cargo test -p e2e --test e2e fuzz:: -- --nocapture
//! ```
//!
//! (`FUZZ_CASE=<from>..<to>` replays a range, one case at a time, naming each before it is
//! sent; `FUZZ_REPORT=<file>` writes every failure there, not only the first dozen.)
//!
//! `FUZZ_SEED` (decimal or `0x…`) and `FUZZ_CASES` explore beyond the fixed default run. If
//! the process dies (a stack overflow aborts it before any assertion can speak), the cases of
//! the batch in flight are in `<temp dir>/e2e-fuzz-in-flight-<pid>.txt`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::{Client, GRAPHQL_RESPONSE_JSON, StatusCode, spawn_app_with};
use gateway::auth::{Authenticator, Role};
use gateway::shaping::persisted::sha256_hex;
use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::{Value, json};

/// The default seed: every run sends the same requests unless `FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x5EED_0012_0008;
/// Requests of the default run.
const DEFAULT_CASES: usize = 6000;
/// Requests between two health checks.
const BATCH: usize = 100;
/// Requests in flight at once.
const IN_FLIGHT: usize = 8;

/// Every `extensions.code` of the README's table under "Error codes". `INTERNAL` and
/// `RATE_LIMITED` are in it but fail the test: the first is a failure on the gateway's side,
/// the second cannot happen with limits off.
fn readme_codes() -> Vec<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).expect("the README");
    let section = readme
        .split("\n## Error codes")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has an Error codes section");
    let codes: Vec<String> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(code, _)| code.to_owned())
        .filter(|code| code.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(
        codes.len() >= 10 && codes.iter().any(|c| c == "BAD_REQUEST"),
        "the README's table of error codes was not found: {codes:?}"
    );
    codes
}

/// Text that betrays internals (compared in lower case). A marker the request itself carries
/// may be echoed back (an unknown field's name, a bad channel) and does not count.
const LEAK_MARKERS: &[&str] = &[
    "sqlx",
    "sea_orm",
    "sea-orm",
    "seaorm",
    "sqlstate",
    "panicked",
    "thread '",
    ".rs:",
    "stack backtrace",
    "backtrace",
    "database error",
    "error returned from database",
    "pool timed out",
    "open connection",
    "no such table",
    "no such column",
    "syntax error at or near",
    "constraint failed",
    "unique constraint",
    "duplicate key",
    "violates",
    "database is locked",
    "pg_catalog",
    "invalid byte sequence",
    "sqlite",
    "postgres",
    "tokio",
    "hyper::",
    "axum::",
    "async_graphql",
    "serde_json",
    "/src/",
    "/home/",
    "/root/",
    ".cargo",
    "rustc",
];

// ---------------------------------------------------------------------------------------------
// The generator.

/// xorshift64* seeded through splitmix64: small, fast and the same on every machine.
struct Rng(u64);

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator of case `index` of the run `seed`.
    fn for_case(seed: u64, index: usize) -> Self {
        Self(splitmix(seed ^ splitmix(index as u64)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// `lo..=hi`.
    fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length up to `max`, every order of magnitude about as likely as the next.
    fn size(&mut self, max: usize) -> usize {
        let bits = (usize::BITS - max.leading_zeros()) as usize;
        let cap = 1usize
            .checked_shl(self.below(bits + 1) as u32)
            .unwrap_or(max)
            .min(max);
        self.below(cap + 1)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// One request.
struct Case {
    index: usize,
    kind: &'static str,
    method: Method,
    /// Path and query string.
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
}

impl Case {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    fn set_header(&mut self, name: &'static str, value: Vec<u8>) {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, header_safe(value)));
    }

    /// Everything the request says, in lower case (its query string also decoded).
    fn text_lower(&self) -> String {
        let mut text = self.target.to_lowercase();
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&percent_decode(&self.target)).to_lowercase());
        for (name, value) in &self.headers {
            let _ = write!(text, "\n{name}: {}", String::from_utf8_lossy(value));
        }
        if let Some(body) = &self.body {
            text.push('\n');
            text.push_str(&String::from_utf8_lossy(body));
        }
        text.to_lowercase()
    }

    /// The request for a failure report, long values clipped to `limit` characters.
    fn describe(&self, limit: usize) -> String {
        let mut out = format!(
            "case {} ({}): {} {}\n",
            self.index,
            self.kind,
            self.method,
            clip(&self.target, limit)
        );
        for (name, value) in &self.headers {
            let _ = writeln!(
                out,
                "  {name}: {}",
                clip(&String::from_utf8_lossy(value), limit)
            );
        }
        if let Some(body) = &self.body {
            let _ = writeln!(
                out,
                "  body ({} bytes): {}",
                body.len(),
                clip(&String::from_utf8_lossy(body), limit)
            );
        }
        out
    }
}

/// What the generator needs of the gateway under test.
struct Context {
    auth: Arc<Authenticator>,
    /// Valid tokens of several roles and channels.
    tokens: Vec<String>,
    /// SHA-256 of every safelisted operation file.
    hashes: Vec<String>,
}

/// Case `index` of the run `seed`.
fn generate(seed: u64, index: usize, ctx: &Context) -> Case {
    let mut rng = Rng::for_case(seed, index);
    let mut case = Case {
        index,
        kind: "",
        method: Method::POST,
        target: "/graphql".to_owned(),
        headers: Vec::new(),
        body: None,
    };
    let roll = rng.below(100);
    // The request's content.
    let payload = match roll {
        0..=6 => {
            case.kind = "random body";
            case.body = Some(random_body(&mut rng));
            None
        }
        7..=15 => {
            case.kind = "garbled JSON";
            let payload = template_payload(&mut rng);
            case.body = Some(garble(&mut rng, payload.to_json().into_bytes()));
            None
        }
        16..=22 => {
            case.kind = "mistyped fields";
            case.body = Some(mistyped_body(&mut rng).into_bytes());
            None
        }
        23..=41 => {
            case.kind = "mutated document";
            let mut payload = template_payload(&mut rng);
            let doc = payload.query.take().unwrap_or_default();
            payload.query = Some(mutate_document(&mut rng, &doc));
            Some(payload)
        }
        42..=45 => {
            case.kind = "admin writes";
            Some(admin_payload(&mut rng))
        }
        46..=62 => {
            case.kind = "crafted document";
            Some(crafted_payload(&mut rng))
        }
        63..=72 => {
            case.kind = "hostile variables";
            Some(variables_payload(&mut rng))
        }
        73..=80 => {
            case.kind = "persisted query";
            Some(persisted_payload(&mut rng, ctx))
        }
        81..=85 => {
            case.kind = "raw query string";
            case.method = Method::GET;
            case.target = format!("/graphql?{}", raw_query_string(&mut rng));
            None
        }
        86..=95 => {
            case.kind = "hostile headers";
            Some(template_payload(&mut rng))
        }
        _ => {
            case.kind = "method or route";
            other_route(&mut rng, &mut case);
            if case.method == Method::POST || case.method == Method::GET {
                Some(template_payload(&mut rng))
            } else {
                None
            }
        }
    };
    // How it travels: a JSON body (mostly), or a query string.
    if let Some(mut payload) = payload {
        payload.query = payload.query.map(known_issue_guard);
        // URLs stay well under the 64 KiB a URI may have (longer ones travel as bodies).
        let query = (case.method == Method::GET || rng.chance(25))
            .then(|| payload.to_query_string(&mut rng))
            .filter(|query| query.len() <= 30_000);
        match query {
            Some(query) => {
                case.method = Method::GET;
                case.target = format!("{}?{query}", case.target);
            }
            None => case.body = Some(payload.to_json().into_bytes()),
        }
    }
    headers(&mut rng, &mut case, ctx);
    if case.kind == "admin writes" {
        // Writes need an admin; they run on web, eight at a time with everything else.
        let token = format!("Bearer {}", ctx.tokens[0]).into_bytes();
        case.set_header("authorization", token);
        case.headers.retain(|(name, _)| *name != "x-channel");
    }
    case
}

/// KNOWN ISSUE (left for the lead to decide; see the report of issue 12 point 8): the
/// bracket-nesting pre-scan (`gateway::shaping::input::nesting_exceeds`) ends a `#` comment
/// only at `\n`, while GraphQL (and async-graphql's parser) also ends it at a lone `\r`. So
/// `"#\r" + "[" × 1000 …` is never refused: the parser recurses and overflows the stack,
/// which aborts the whole process — here the whole e2e test binary, every other test with it.
/// Until the scan is fixed, generated documents get `\r\n` wherever they would have a lone
/// `\r`; set this to `true` once it is, and the generator sends lone `\r`s again (with it
/// `true` today, the default run aborts at case 2140, a GET whose query is
/// `#dE"~y3?*C\`\r{ variant(sku: [[[…` from the "comment, then deep nesting" documents).
const LONE_CR_COMMENTS_ARE_SAFE: bool = true;

fn known_issue_guard(doc: String) -> String {
    if LONE_CR_COMMENTS_ARE_SAFE || !doc.contains('\r') {
        return doc;
    }
    doc.replace("\r\n", "\n").replace('\r', "\r\n")
}

/// Nesting depth: mostly up to a few hundred levels, sometimes thousands (the pre-scan's
/// job is to refuse those before the parser's recursion meets them).
fn nesting_depth(rng: &mut Rng) -> usize {
    if rng.chance(10) {
        rng.between(1000, 20_000)
    } else {
        rng.size(400)
    }
}

/// The parts of a GraphQL request, each already JSON text (so any of them can be mistyped).
#[derive(Default)]
struct Payload {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
    extensions: Option<String>,
}

impl Payload {
    fn document(query: String) -> Self {
        Self {
            query: Some(query),
            ..Self::default()
        }
    }

    fn to_json(&self) -> String {
        let mut fields = Vec::new();
        if let Some(query) = &self.query {
            fields.push(format!("\"query\":{}", json_string(query)));
        }
        for (name, value) in [
            ("variables", &self.variables),
            ("operationName", &self.operation_name),
            ("extensions", &self.extensions),
        ] {
            if let Some(value) = value {
                fields.push(format!("\"{name}\":{value}"));
            }
        }
        format!("{{{}}}", fields.join(","))
    }

    /// `query=…&variables=…`: JSON strings travel as their text, everything else as JSON.
    fn to_query_string(&self, rng: &mut Rng) -> String {
        let mut pairs = Vec::new();
        if let Some(query) = &self.query {
            pairs.push(format!("query={}", percent_encode(query.as_bytes())));
        }
        for (name, value) in [
            ("variables", &self.variables),
            ("operationName", &self.operation_name),
            ("extensions", &self.extensions),
        ] {
            if let Some(value) = value {
                let text = match serde_json::from_str::<Value>(value) {
                    Ok(Value::String(s)) if name == "operationName" => s,
                    _ => value.clone(),
                };
                pairs.push(format!("{name}={}", percent_encode(text.as_bytes())));
            }
        }
        if rng.chance(5) && !pairs.is_empty() {
            // A parameter twice.
            let again = pairs[rng.below(pairs.len())].clone();
            pairs.push(again);
        }
        if rng.chance(10) {
            let i = rng.below(pairs.len() + 1);
            pairs.insert(i, raw_query_string(rng));
        }
        pairs.join("&")
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

// --- Documents ---------------------------------------------------------------------------

/// Valid operations from the README tour and the safelists, with variables that fit them.
const TEMPLATES: &[(&str, &str)] = &[
    (
        "query CatalogPage($after: String) {
  products(first: 20, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges {
      node {
        id slug name
        category { name parent { name } }
        attributes { key value }
        variants { sku options { name value } availability { status quantity } }
      }
    }
  }
}",
        r#"{"after":null}"#,
    ),
    (
        r#"{
  categories { id slug name children { slug } }
  linenTees: products(first: 10, filter: {search: "tee", attributes: [{key: "material", value: "linen"}]}) {
    totalCount
    nodes { name attributes { key value } }
  }
  bySku: products(filter: {skus: ["TS-0001-M", "HD-0002-L"]}) { nodes { slug } }
}"#,
        "{}",
    ),
    (
        r#"query CheapestTees($after: String) {
  products(first: 10, after: $after, sort: PRICE_ASC, filter: {search: "tee"}) {
    pageInfo { hasNextPage endCursor }
    nodes { name variants { sku price { listUnitPrice } } }
  }
}"#,
        "{}",
    ),
    (
        r#"{
  product(slug: "lightweight-crew-tee-1") { id name variants { sku name } }
  variant(sku: "HD-0002-L") { name product { name } availability { status quantity } }
}"#,
        "{}",
    ),
    (
        r#"{
  stockLocations { code region handlingHours cutoffTime priority }
  variant(sku: "PP-0012-P1") { name product { name category { name } } availability { quantity } }
}"#,
        "{}",
    ),
    (
        r#"{
  variant(sku: "TS-0001-M") {
    price(quantity: 3) {
      currency listUnitPrice unitPrice lineTotal discountTotal
      tier { minQuantity priceList scope }
      appliedRules { kind code name effect unitAmount }
    }
    priceTiers { minQuantity unitPrice priceList }
    quantityRule { minQuantity maxQuantity increment }
  }
}"#,
        "{}",
    ),
    (
        r#"{
  priceQuote(lines: [{sku: "PP-0012-P1", quantity: 12}, {sku: "HD-0002-L", quantity: 1}]) {
    currency subtotal discountTotal total
    lines { sku quantity price { unitPrice lineTotal tier { minQuantity } appliedRules { code effect } } }
  }
}"#,
        "{}",
    ),
    (
        "query Quote($lines: [QuoteLineInput!]!) {
  priceQuote(lines: $lines) {
    currency subtotal discountTotal total
    lines { sku quantity price { unitPrice lineTotal appliedRules { code effect } } }
  }
}",
        r#"{"lines":[{"sku":"TS-0001-M","quantity":2}]}"#,
    ),
    (
        "query StockLookup($sku: String!) {
  channel { code name locations { code name kind } }
  variant(sku: $sku) {
    name
    availability { status quantity }
    stockLevels { location { code } onHand reserved available }
    price { unitPrice }
  }
}",
        r#"{"sku":"TS-0001-M"}"#,
    ),
    (
        "query ProductDetail($slug: String!) {
  product(slug: $slug) {
    id name description
    attributes { key value }
    variants {
      sku name options { name value }
      availability { status quantity }
      price { unitPrice listUnitPrice appliedRules { code effect } }
    }
  }
}",
        r#"{"slug":"lightweight-crew-tee-1"}"#,
    ),
    (
        r#"mutation {
  createPriceList(input: {code: "summer-usd", name: "Summer prices", currency: "USD",
                          priority: 10, validUntil: "2027-09-01T00:00:00Z"}) {
    id scope active
  }
}"#,
        "{}",
    ),
    (
        "mutation Entries($list: ID!, $entries: [PriceEntryInput!]!) {
  setPriceEntries(priceList: $list, entries: $entries) { priceList sku minQuantity amount }
}",
        r#"{"list":"UHJpY2VMaXN0OjE=","entries":[{"sku":"TS-0001-M","amount":"17.5"},{"sku":"TS-0001-M","minQuantity":10,"amount":"15"}]}"#,
    ),
    (
        "query Frag { products(first: 3) { nodes { ...P } } }
fragment P on Product { id name variants { ...V } }
fragment V on Variant { sku availability { status } }",
        "{}",
    ),
    (
        "query Flags($t: Boolean = true, $n: Int = 5) {
  channel @include(if: $t) { code }
  products(first: $n) @skip(if: false) { totalCount nodes { __typename slug } }
}",
        r#"{"t":true}"#,
    ),
    (
        "{ channel { code name currency locations { code } } }",
        "{}",
    ),
];

/// A template with its own variables, sometimes with its operation's name.
fn template_payload(rng: &mut Rng) -> Payload {
    let (doc, variables) = rng.pick(TEMPLATES);
    let mut payload = Payload::document((*doc).to_owned());
    if rng.chance(70) {
        payload.variables = Some((*variables).to_owned());
    }
    if rng.chance(20)
        && let Some(name) = operation_name_of(doc)
    {
        payload.operation_name = Some(json_string(name));
    }
    payload
}

fn operation_name_of(doc: &str) -> Option<&str> {
    let rest = doc
        .strip_prefix("query ")
        .or_else(|| doc.strip_prefix("mutation "))?;
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end]).filter(|name| !name.is_empty())
}

/// Names of the schema and the language, and some that are not names at all.
const NAMES: &[&str] = &[
    "products",
    "product",
    "variant",
    "categories",
    "stockLocations",
    "channel",
    "priceQuote",
    "nodes",
    "edges",
    "node",
    "pageInfo",
    "totalCount",
    "id",
    "slug",
    "name",
    "sku",
    "price",
    "priceTiers",
    "availability",
    "stockLevels",
    "location",
    "code",
    "__typename",
    "__schema",
    "__type",
    "query",
    "mutation",
    "subscription",
    "fragment",
    "on",
    "true",
    "false",
    "null",
    "first",
    "after",
    "filter",
    "sort",
    "PRICE_ASC",
    "lines",
    "quantity",
    "createPriceList",
    "setPriceEntries",
    "input",
    "Int",
    "String",
    "ID",
    "Boolean",
    "Decimal",
    "Query",
    "Mutation",
    "Product",
    "variants",
    "parent",
    "children",
    "appliedRules",
    "onHand",
    "_",
    "__",
    "a",
    "é",
    "𝔘𝔫𝔦",
    "1abc",
];

const PUNCTUATORS: &[&str] = &[
    "{", "}", "(", ")", "[", "]", ":", "!", "$", "@", "=", "|", "&", "...", ",", "\"", "\"\"\"",
    "#", "\\", ".", "..", "'", "`", ";", "<", ">", "?", "%", "*", "+", "-",
];

const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "1",
    "-1",
    "100",
    "101",
    "1000000",
    "1000001",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e400",
    "-1e400",
    "1.0e-400",
    "1.7976931348623157e308",
    "0.0000001",
    "1.5",
    "NaN",
    "Infinity",
    "0x1F",
    "1_000",
    "00",
    "01",
    "1e",
    "1.",
    ".5",
    "-",
    "+1",
];

fn weird_number(rng: &mut Rng) -> String {
    if rng.chance(10) {
        // Thousands of digits.
        let digits = rng.between(20, 10_000);
        let mut n = String::from(if rng.chance(50) { "-9" } else { "9" });
        n.extend((0..digits).map(|_| char::from(b'0' + rng.below(10) as u8)));
        if rng.chance(30) {
            n.push_str(".5e99999");
        }
        n
    } else {
        (*rng.pick(NUMBERS)).to_owned()
    }
}

/// One character from many scripts and planes (never a surrogate).
fn unicode_char(rng: &mut Rng) -> char {
    let (lo, hi) = *rng.pick(&[
        (0x20, 0x7E),         // ASCII
        (0x00, 0x1F),         // control characters
        (0xA0, 0x24F),        // Latin
        (0x300, 0x36F),       // combining marks
        (0x370, 0x3FF),       // Greek
        (0x590, 0x6FF),       // Hebrew, Arabic (right to left)
        (0x200B, 0x200F),     // zero-width and direction marks
        (0x2028, 0x202E),     // separators, bidi overrides
        (0x4E00, 0x9FFF),     // CJK
        (0xE000, 0xF8FF),     // private use
        (0xFEFF, 0xFEFF),     // byte-order mark
        (0xFFF0, 0xFFFF),     // specials, non-characters
        (0x1F300, 0x1F64F),   // emoji
        (0x10FFF0, 0x10FFFF), // the last plane
    ]);
    char::from_u32(rng.between(lo, hi) as u32).unwrap_or('\u{FFFD}')
}

/// Visible ASCII, up to `max` characters.
fn ascii_upto(rng: &mut Rng, max: usize) -> String {
    let len = rng.size(max);
    ascii_text(rng, len)
}

fn unicode_text(rng: &mut Rng, max: usize) -> String {
    let n = rng.size(max);
    (0..n).map(|_| unicode_char(rng)).collect()
}

fn ascii_text(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| char::from(rng.between(0x20, 0x7E) as u8))
        .collect()
}

/// The body of a GraphQL string literal (escaped as GraphQL wants, or deliberately not).
/// An id or cursor as the gateway spells them (base64url of `Kind:number` or
/// `cursor:<sort>:<id>[:<key>]`), around odd numbers and keys: NULs, huge numbers, long text.
fn forged_id(rng: &mut Rng) -> String {
    forged(rng, None)
}

/// A cursor for a listing in `sort` order, mostly with that order's tag.
fn forged_cursor(rng: &mut Rng, sort: &str) -> String {
    let tag = match sort {
        "NAME" => "cursor:name:",
        "PRICE_ASC" => "cursor:price_asc:",
        "PRICE_DESC" => "cursor:price_desc:",
        _ => "cursor:product:",
    };
    let tag = rng.chance(80).then_some(tag);
    forged(rng, tag)
}

fn forged(rng: &mut Rng, tag: Option<&str>) -> String {
    let tag = tag.unwrap_or_else(|| {
        *rng.pick(&[
            "cursor:product:",
            "cursor:name:",
            "cursor:price_asc:",
            "cursor:price_desc:",
            "Product:",
            "Variant:",
            "Category:",
            "StockLocation:",
            "PriceList:",
            "Promotion:",
            "cursor:",
            "",
        ])
    });
    let id = *rng.pick(&[
        "1",
        "2",
        "0",
        "-1",
        "9223372036854775807",
        "9223372036854775808",
        "99999999999999999999",
        "1.5",
        " 1",
        "01",
        "+1",
        "abc",
        "",
    ]);
    let key = match rng.below(14) {
        0 => String::new(),
        1 => ":".to_owned(),
        2 => ":-".to_owned(),
        3 | 12 | 13 => format!(":{}\0{}", ascii_text(rng, 2), ascii_text(rng, 2)),
        4 => format!(":{}", unicode_text(rng, 30)),
        5 => format!(":{}", "x".repeat(rng.size(10_000))),
        6 => ":99999999999999999999999999999".to_owned(),
        7 => ":1e400".to_owned(),
        8 => ":-0".to_owned(),
        9 => ":0.00001".to_owned(),
        10 => ":%_'".to_owned(),
        _ => ":NaN".to_owned(),
    };
    base64(format!("{tag}{id}{key}").as_bytes())
}

fn string_body(rng: &mut Rng) -> String {
    match rng.below(18) {
        16 | 17 => forged_id(rng),
        0 => String::new(),
        1 => "\\u0000".to_owned(),
        2 => format!(
            "TS-0001-M\\u0000{}",
            ascii_text(rng, 3).replace(['"', '\\'], "")
        ),
        3 => "\\uD800".to_owned(),
        4 => "\\uDFFF\\uD800x".to_owned(),
        5 => "\\u{1F600}\\u{110000}\\u{}".to_owned(),
        6 => "\\q\\x41\\".to_owned(),
        7 => {
            // Long: up to 100 KB.
            let len = rng.size(100_000);
            let c = *rng.pick(&["a", "é", "🦀", "\\\\", "%", " "]);
            c.repeat(len.max(1) / c.len().max(1))
        }
        8 => {
            let len = rng.size(300);
            ascii_text(rng, len).replace(['"', '\\'], "_")
        }
        9 => escape_graphql(&unicode_text(rng, 200)),
        10 => (*rng.pick(&[
            "%",
            "_",
            "%_%",
            "\\\\%",
            "' OR 1=1 --",
            "\\\"; DROP TABLE products; --",
            "../../etc/passwd",
            "TS-0001-M",
            "tee",
            "   ",
            "\\t\\n\\r",
            "\\\\u0000",
            "UHJvZHVjdDox",
            "UHJvZHVjdDotMQ==",
            "Y3Vyc29yOjk5OTk5OTk5OTk5OTk5OTk5OTk5",
            "bm90IGEgY3Vyc29y",
            "gid://shop/Product/1",
            "2027-09-01T00:00:00Z",
            "99999-99-99T99:99:99Z",
            "17.5",
            "1e3",
            "-0.00001",
        ]))
        .to_owned(),
        11 => {
            let len = rng.size(2000);
            let mut bytes = vec![0u8; len];
            for b in &mut bytes {
                *b = rng.byte();
            }
            base64(&bytes)
        }
        12 => format!("\\u{:04X}", rng.below(0x1_0000)),
        13 => unicode_text(rng, 50), // raw, unescaped: quotes and control characters included
        14 => "\n".to_owned(),
        _ => escape_graphql(&"🦀".repeat(rng.size(25_000))),
    }
}

fn escape_graphql(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn weird_string_literal(rng: &mut Rng) -> String {
    if rng.chance(8) {
        format!(
            "\"\"\"{}\"\"\"",
            unicode_text(rng, 100).replace("\"\"\"", "")
        )
    } else {
        format!("\"{}\"", string_body(rng))
    }
}

const DIRECTIVES: &[&str] = &[
    "@include",
    "@include()",
    "@include(if: \"yes\")",
    "@include(if: 1)",
    "@include(if: null)",
    "@include(if: $nope)",
    "@include(if: [true])",
    "@include(if: {a: true})",
    "@include(if: true, if: false)",
    "@include(unless: true)",
    "@skip(if: true) @skip(if: false)",
    "@skip(if: true) @include(if: true)",
    "@deprecated",
    "@deprecated(reason: 1)",
    "@specifiedBy(url: \"x\")",
    "@oneOf",
    "@defer",
    "@stream(initialCount: -1)",
    "@nope",
    "@nope(x: [[[1]]])",
    "@",
    "@@",
    "@include(if: true",
    "@include(if: ENUM_VALUE)",
];

fn directive(rng: &mut Rng) -> String {
    if rng.chance(15) {
        format!("@include(if: {})", weird_string_literal(rng))
    } else {
        (*rng.pick(DIRECTIVES)).to_owned()
    }
}

/// Splits a document into tokens: punctuators, names and numbers, string literals.
fn tokenize(doc: &str) -> Vec<String> {
    let chars: Vec<char> = doc.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() || c == ',' {
            i += 1;
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i = (i + 1).min(chars.len());
            tokens.push(chars[start..i].iter().collect());
        } else if c == '.' && chars[i..].starts_with(&['.', '.', '.']) {
            tokens.push("...".to_owned());
            i += 3;
        } else if c.is_alphanumeric() || c == '_' || c == '-' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '-' | '.'))
            {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else {
            tokens.push(c.to_string());
            i += 1;
        }
    }
    tokens
}

/// A template, broken in up to ten ways (a few left whole).
fn mutate_document(rng: &mut Rng, doc: &str) -> String {
    let mut tokens = tokenize(doc);
    let rounds = if rng.chance(5) {
        0
    } else if rng.chance(20) {
        rng.between(5, 10)
    } else {
        rng.between(1, 4)
    };
    for _ in 0..rounds {
        let n = tokens.len();
        let at = rng.below(n + 1);
        match rng.below(15) {
            0 if n > 0 => {
                tokens.remove(at.min(n - 1));
            }
            1 if n > 0 => {
                let start = at.min(n - 1);
                let end = (start + rng.between(1, 5)).min(n);
                let run: Vec<String> = tokens[start..end].to_vec();
                let copies = if rng.chance(10) {
                    rng.between(2, 200)
                } else {
                    1
                };
                for _ in 0..copies {
                    for (k, token) in run.iter().enumerate() {
                        tokens.insert(end + k, token.clone());
                    }
                }
            }
            2 if n > 1 => {
                let other = rng.below(n);
                tokens.swap(at.min(n - 1), other);
            }
            3 if n > 1 => {
                let start = at.min(n - 1);
                let end = (start + rng.between(2, 8)).min(n);
                for k in (start + 1..end).rev() {
                    let j = rng.between(start, k);
                    tokens.swap(k, j);
                }
            }
            4 => tokens.insert(at, (*rng.pick(PUNCTUATORS)).to_owned()),
            5 => {
                let brace = *rng.pick(&["{", "}", "[", "]", "(", ")"]);
                tokens.insert(at, brace.repeat(rng.between(1, 10)));
            }
            6 => {
                let name = (*rng.pick(NAMES)).to_owned();
                if n > 0 && rng.chance(50) {
                    tokens[at.min(n - 1)] = name;
                } else {
                    tokens.insert(at, name);
                }
            }
            7 => {
                let number = weird_number(rng);
                match tokens
                    .iter()
                    .position(|t| t.starts_with(|c: char| c.is_ascii_digit()))
                {
                    Some(i) if rng.chance(70) => tokens[i] = number,
                    _ => tokens.insert(at, number),
                }
            }
            8 => {
                let literal = weird_string_literal(rng);
                let strings: Vec<usize> = (0..n).filter(|&i| tokens[i].starts_with('"')).collect();
                if !strings.is_empty() && rng.chance(70) {
                    tokens[*rng.pick(&strings)] = literal;
                } else {
                    tokens.insert(at, literal);
                }
            }
            9 => {
                // A comment, ended by any of the line terminators GraphQL knows.
                let end = *rng.pick(&["\n", "\r", "\r\n", ""]);
                let text = unicode_text(rng, 20).replace(['\n', '\r'], " ");
                tokens.insert(at, format!("#{text}{end}"));
            }
            10 => {
                // Brackets nested a few hundred levels deep around a stretch of the document.
                let depth = nesting_depth(rng);
                let (open, close) = *rng.pick(&[("{", "}"), ("[", "]"), ("(", ")")]);
                let end = rng.between(at, n);
                tokens.insert(end, close.repeat(depth));
                tokens.insert(at, open.repeat(depth));
            }
            11 => tokens.insert(at, directive(rng)),
            12 => tokens.insert(at, format!("a{}:", rng.below(1000))),
            13 => tokens.insert(at, unicode_text(rng, 8)),
            _ => tokens.insert(at, format!("...{}", rng.pick(NAMES))),
        }
    }
    let separator = *rng.pick(&[" ", " ", " ", "\n", ",", "\t", "\r", ""]);
    tokens.join(separator)
}

/// Documents built to stress one thing: depth, aliases, fragments, directives, numbers,
/// strings, operations, size, introspection, mutations, raw control characters.
fn crafted_payload(rng: &mut Rng) -> Payload {
    let mut payload = Payload::default();
    let doc = match rng.below(15) {
        14 => {
            // A comment, then deep nesting: the pre-scan must see where the comment ends.
            let end = *rng.pick(&["\n", "\r", "\r\n"]);
            let depth = nesting_depth(rng);
            let (open, close) = *rng.pick(&[("[", "]"), ("{a:", "}")]);
            format!(
                "#{}{end}{{ variant(sku: {}\"TS-0001-M\"{}) {{ sku }} }}",
                ascii_text(rng, 10),
                open.repeat(depth),
                close.repeat(depth)
            )
        }
        0 => {
            let depth = nesting_depth(rng);
            format!(
                "{{ categories {{ {}name{} }} }}",
                "parent { ".repeat(depth),
                " }".repeat(depth)
            )
        }
        1 => {
            let depth = nesting_depth(rng);
            format!(
                "{{ variant(sku: {}\"TS-0001-M\"{}) {{ sku }} }}",
                "[".repeat(depth),
                "]".repeat(depth)
            )
        }
        2 => {
            let depth = nesting_depth(rng);
            format!(
                "{{ products(filter: {}\"tee\"{}) {{ totalCount }} }}",
                "{search: ".repeat(depth),
                "}".repeat(depth)
            )
        }
        3 => {
            let depth = nesting_depth(rng);
            let body = if rng.chance(50) {
                format!(
                    "{}{{ channel {{ code }} }}{}",
                    "... on Query { ".repeat(depth),
                    " }".repeat(depth)
                )
            } else {
                format!("{}channel{}", "{".repeat(depth + 1), "}".repeat(depth + 1))
            };
            format!("{{ {body} }}")
        }
        4 => {
            // Many aliases, at the root or below a list.
            let n = rng.size(600).max(1);
            let fields: Vec<String> = (0..n)
                .map(|i| {
                    if i % 2 == 0 {
                        format!("a{i}: channel {{ code }}")
                    } else {
                        format!("a{i}: __typename")
                    }
                })
                .collect();
            if rng.chance(50) {
                format!("{{ {} }}", fields.join(" "))
            } else {
                let names: Vec<String> = (0..n).map(|i| format!("n{i}: name")).collect();
                format!("{{ products(first: 100) {{ nodes {{ {} }} }} }}", names.join(" "))
            }
        }
        5 => fragments(rng),
        6 => {
            // Directives with bad arguments on fields, fragments and operations.
            let (doc, _) = rng.pick(TEMPLATES);
            let mut out = String::new();
            for (i, part) in doc.split('{').enumerate() {
                if i > 0 {
                    if rng.chance(30) {
                        out.push(' ');
                        out.push_str(&directive(rng));
                    }
                    out.push('{');
                }
                out.push_str(part);
            }
            out
        }
        7 => {
            let n = weird_number(rng);
            match rng.below(5) {
                0 => format!("{{ products(first: {n}) {{ totalCount }} }}"),
                1 => format!("{{ variant(sku: \"TS-0001-M\") {{ price(quantity: {n}) {{ unitPrice }} }} }}"),
                2 => format!("{{ priceQuote(lines: [{{sku: \"TS-0001-M\", quantity: {n}}}]) {{ total }} }}"),
                3 => format!("{{ product(id: {n}) {{ id }} }}"),
                _ => format!("query($n: Int = {n}) {{ products(first: $n) {{ totalCount }} }}"),
            }
        }
        8 => {
            let s = weird_string_literal(rng);
            let t = weird_string_literal(rng);
            match rng.below(10) {
                0 => format!("{{ products(filter: {{search: {s}}}) {{ totalCount }} }}"),
                1 => format!("{{ variant(sku: {s}) {{ sku price {{ unitPrice }} }} }}"),
                2 => format!("{{ product(slug: {s}) {{ id }} }}"),
                3 => format!("{{ product(id: {s}) {{ id }} }}"),
                4 => {
                    let sort = *rng.pick(&["ID", "NAME", "PRICE_ASC", "PRICE_DESC"]);
                    let after = if rng.chance(50) {
                        format!("\"{}\"", forged_cursor(rng, sort))
                    } else {
                        s
                    };
                    format!(
                        "{{ products(first: 3, after: {after}, sort: {sort}) {{ totalCount nodes {{ id }} }} }}"
                    )
                }
                5 => format!("{{ products(filter: {{skus: [{s}, {t}]}}) {{ totalCount }} }}"),
                6 => format!(
                    "{{ products(filter: {{attributes: [{{key: {s}, value: {t}}}]}}) {{ totalCount }} }}"
                ),
                7 => format!("{{ products(filter: {{categoryId: {s}}}) {{ totalCount }} }}"),
                8 => format!(
                    "{{ priceQuote(lines: [{{sku: {s}, quantity: 1}}, {{sku: {t}, quantity: 2}}]) {{ total }} }}"
                ),
                _ => format!("{{ __type(name: {s}) {{ name }} }}"),
            }
        }
        9 => {
            // Several operations, and operation names that do or do not pick one.
            let count = rng.between(1, 50);
            let mut ops = Vec::new();
            for i in 0..count {
                let name = match rng.below(4) {
                    0 => String::new(),
                    1 => "A".to_owned(),
                    _ => format!("Op{i}"),
                };
                let kind = *rng.pick(&["query", "query", "mutation", "subscription"]);
                ops.push(format!("{kind} {name} {{ channel {{ code }} }}"));
            }
            let name = match rng.below(5) {
                0 => json!(null),
                1 => json!("A"),
                2 => json!(format!("Op{}", rng.below(count + 2))),
                3 => json!(unicode_text(rng, 30)),
                _ => json!(""),
            };
            payload.operation_name = Some(name.to_string());
            ops.join(*rng.pick(&["\n", " ", ""]))
        }
        10 => match rng.below(4) {
            0 => {
                let n = rng.size(3000).max(1);
                format!("{{ {} }}", "channel { code } ".repeat(n))
            }
            1 => "{ products(first: 100) { nodes { variants { price { appliedRules { code } } priceTiers { unitPrice } stockLevels { onHand } } } } }".to_owned(),
            2 => "{ products(first: 100) { nodes { variants { product { variants { product { variants { sku } } } } } } } }".to_owned(),
            _ => format!(
                "{{ {} }}",
                (0..rng.between(1, 40))
                    .map(|i| format!("p{i}: products(first: 100) {{ nodes {{ name }} }}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        },
        11 => {
            let depth = rng.size(60);
            match rng.below(3) {
                0 => "{ __schema { types { name fields { name args { name type { name } } type { name ofType { name ofType { name } } } } } } }".to_owned(),
                1 => format!(
                    "{{ __type(name: \"Product\") {{ fields {{ type {}name{} }} }} }}",
                    "{ ofType ".repeat(depth),
                    " }".repeat(depth)
                ),
                _ => "{ __typename __schema { queryType { name } } }".to_owned(),
            }
        }
        12 => {
            let s = weird_string_literal(rng);
            let n = weird_number(rng);
            match rng.below(6) {
                0 => format!(
                    "mutation {{ createPriceList(input: {{code: {s}, name: {s}, currency: {s}, priority: {n}}}) {{ id }} }}"
                ),
                1 => format!(
                    "mutation {{ setPriceEntries(priceList: {s}, entries: [{{sku: \"TS-0001-M\", amount: {s}}}]) {{ sku }} }}"
                ),
                2 => format!(
                    "mutation {{ createPromotion(input: {{code: {s}, name: \"x\", discount: PERCENT_OFF, value: {s}, minQuantity: {n}}}) {{ id }} }}"
                ),
                3 => format!("mutation {{ updatePromotion(id: {s}, input: {{value: {s}}}) {{ id }} }}"),
                4 => "subscription { channel { code } }".to_owned(),
                _ => format!(
                    "mutation {{ setQuantityRule(priceList: {s}, input: {{sku: {s}, minQuantity: {n}, increment: {n}}}) {{ sku }} }}"
                ),
            }
        }
        _ => {
            // Raw control characters, NULs and odd whitespace inside a template, or an empty
            // or truncated document.
            if rng.chance(40) {
                (*rng.pick(&[
                    "",
                    " ",
                    "#",
                    "{}",
                    "{ }",
                    "query",
                    "query {",
                    "fragment F on Query { channel { code } }",
                    "{ ... }",
                    "{ ...F }",
                    "\u{feff}{ channel { code } }",
                    "{ channel { code } } }",
                    "{ channel { code } } extra",
                    "query Q($a: Int, $a: Int) { channel { code } }",
                    "query($x: Nope) { channel { code } }",
                    "query($x: [[[Int!]!]!]!) { channel { code } }",
                ]))
                .to_owned()
            } else {
                let (doc, _) = rng.pick(TEMPLATES);
                let mut chars: Vec<char> = doc.chars().collect();
                for _ in 0..rng.between(1, 5) {
                    let c = *rng.pick(&[
                        '\0', '\u{1}', '\u{8}', '\u{b}', '\u{c}', '\u{1b}', '\u{7f}', '\u{85}',
                        '\u{a0}', '\u{2028}', '\u{feff}', '\u{fffe}', '\r',
                    ]);
                    let at = rng.below(chars.len() + 1);
                    chars.insert(at, c);
                }
                chars.into_iter().collect()
            }
        }
    };
    payload.query = Some(doc);
    payload
}

/// Fragments that spread each other: chains that double at every step, cycles, spreads of
/// themselves or of nothing, fragments on wrong types, and many unused ones.
fn fragments(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 => {
            let k = rng.between(1, 60);
            let mut doc = "{ products(first: 100) { nodes { ...F0 } } }".to_owned();
            for i in 0..k {
                let _ = write!(
                    doc,
                    " fragment F{i} on Product {{ name ...F{} ...F{} }}",
                    i + 1,
                    i + 1
                );
            }
            let _ = write!(doc, " fragment F{k} on Product {{ id }}");
            doc
        }
        1 => {
            let k = rng.between(1, 20);
            let mut doc = "{ channel { ...C0 } }".to_owned();
            for i in 0..k {
                let _ = write!(
                    doc,
                    " fragment C{i} on Channel {{ code ...C{} }}",
                    (i + 1) % k
                );
            }
            doc
        }
        2 => "{ ...Q } fragment Q on Query { channel { code } ...Q }".to_owned(),
        3 => format!(
            "{{ channel {{ ...{} }} }} fragment X on {} {{ code }}",
            rng.pick(&["X", "Missing", "", "X X"]),
            rng.pick(&["Channel", "Query", "Nope", "Int", "Channel!", "[Channel]"])
        ),
        _ => {
            let n = rng.size(800).max(1);
            let mut doc = "{ channel { code } }".to_owned();
            for i in 0..n {
                let _ = write!(doc, " fragment U{i} on Channel {{ code }}");
            }
            doc
        }
    }
}

/// Variables of the wrong type, huge, deeply nested or full of NULs, for operations that
/// declare them.
fn variables_payload(rng: &mut Rng) -> Payload {
    const DOCS: &[&str] = &[
        "query CatalogPage($after: String) { products(first: 2, after: $after) { totalCount } }",
        "query ProductDetail($slug: String!) { product(slug: $slug) { id name } }",
        "query Quote($lines: [QuoteLineInput!]!) { priceQuote(lines: $lines) { total } }",
        "query StockLookup($sku: String!) { variant(sku: $sku) { name price { unitPrice } } }",
        "query P($first: Int, $filter: ProductFilterInput, $sort: ProductSort!) { products(first: $first, filter: $filter, sort: $sort) { totalCount } }",
        "query Q($q: Int) { variant(sku: \"TS-0001-M\") { price(quantity: $q) { unitPrice } } }",
        "query T($t: Boolean!) { channel @include(if: $t) { code } }",
        "query I($id: ID) { product(id: $id) { name } }",
        LISTING,
        "mutation E($list: ID!, $entries: [PriceEntryInput!]!) { setPriceEntries(priceList: $list, entries: $entries) { sku } }",
        "mutation C($input: CreatePriceListInput!) { createPriceList(input: $input) { id } }",
    ];
    const LISTING: &str = "query S($after: String, $sort: ProductSort!) { products(first: 5, after: $after, sort: $sort) { nodes { id } } }";
    const KEYS: &[&str] = &[
        "after",
        "slug",
        "lines",
        "sku",
        "first",
        "filter",
        "sort",
        "q",
        "t",
        "id",
        "list",
        "entries",
        "input",
        "",
        "x",
        "é",
        "__proto__",
        "$after",
    ];
    let mut payload = Payload::document((*rng.pick(DOCS)).to_owned());
    let variables = match rng.below(7) {
        0 => random_json(rng, 4),
        6 => {
            // Forged ids and cursors, for the listing that takes them.
            payload.query = Some(LISTING.to_owned());
            let sort = *rng.pick(&["ID", "NAME", "NAME", "NAME", "PRICE_ASC", "PRICE_DESC"]);
            let id = forged_id(rng);
            format!(
                "{{\"after\":\"{}\",\"sort\":\"{sort}\",\"id\":\"{id}\",\"slug\":\"{id}\"}}",
                forged_cursor(rng, sort)
            )
        }
        1 => {
            // Deeply nested: past serde_json's limit of 128 sometimes.
            let depth = rng.size(300);
            let (open, close) = *rng.pick(&[("[", "]"), ("{\"a\":", "}")]);
            format!(
                "{{\"{}\":{}1{}}}",
                rng.pick(KEYS),
                open.repeat(depth),
                close.repeat(depth)
            )
        }
        2 => {
            // Huge: long lists and strings, under the body limit.
            let value = match rng.below(3) {
                0 => {
                    let n = rng.size(20_000);
                    let line = r#"{"sku":"TS-0001-M","quantity":1}"#;
                    format!("[{}]", vec![line; n].join(","))
                }
                1 => json_string(&"x".repeat(rng.size(100_000))),
                _ => format!("[{}]", vec!["\"TS-0001-M\""; rng.size(30_000)].join(",")),
            };
            format!("{{\"{}\":{value}}}", rng.pick(KEYS))
        }
        3 => {
            // NULs and odd text where strings go.
            let text = rng
                .pick(&[
                    "\\u0000",
                    "TS-0001-M\\u0000",
                    "\\ud800",
                    "\\udfff",
                    "\\ud83e\\udd80",
                    "a\\u0000b\\u0000",
                    "\\u0085\\u2028",
                ])
                .to_owned();
            let key = rng.pick(KEYS);
            match rng.below(4) {
                0 => format!("{{\"{key}\":\"{text}\"}}"),
                1 => format!("{{\"lines\":[{{\"sku\":\"{text}\",\"quantity\":1}}]}}"),
                2 => format!(
                    "{{\"filter\":{{\"skus\":[\"ok\",\"{text}\"],\"search\":\"{text}\"}},\"sort\":\"ID\"}}"
                ),
                _ => format!(
                    "{{\"input\":{{\"code\":\"{text}\",\"name\":\"{text}\",\"currency\":\"USD\"}}}}"
                ),
            }
        }
        4 => {
            // Numbers JSON can write but GraphQL cannot hold.
            let n = rng.pick(&[
                "1e400",
                "-1e400",
                "18446744073709551616",
                "-9223372036854775809",
                "2147483648",
                "1.5",
                "-0",
                "1E2",
                "0.1e1",
                "99999999999999999999999999999999999999",
            ]);
            let key = rng.pick(KEYS);
            match rng.below(3) {
                0 => format!("{{\"{key}\":{n}}}"),
                1 => format!("{{\"lines\":[{{\"sku\":\"TS-0001-M\",\"quantity\":{n}}}]}}"),
                _ => format!(
                    "{{\"first\":{n},\"sort\":\"PRICE_ASC\",\"filter\":{{\"search\":\"tee\"}}}}"
                ),
            }
        }
        _ => {
            // Right names, wrong types.
            let mut object = serde_json::Map::new();
            for _ in 0..rng.between(1, 4) {
                let raw = random_json(rng, 3);
                let value = serde_json::from_str(&raw).unwrap_or(Value::Null);
                object.insert((*rng.pick(KEYS)).to_owned(), value);
            }
            Value::Object(object).to_string()
        }
    };
    payload.variables = Some(variables);
    if rng.chance(15) {
        payload.operation_name = Some(random_json(rng, 1));
    }
    payload
}

/// Admin mutations with hostile values: codes, currencies, decimals, dates, ids and numbers
/// at and past their limits, sometimes of the wrong JSON type; ids of lists and promotions
/// that exist (the demo's and those created here) or not.
fn admin_payload(rng: &mut Rng) -> Payload {
    // How often a value is hostile: never on some writes (they should succeed), often on others.
    let wild = if rng.chance(40) { 0 } else { 35 };
    let text = |rng: &mut Rng| -> Value {
        if !rng.chance(wild) {
            return json!(format!("fuzz-{}", rng.below(1_000_000)));
        }
        match rng.below(7) {
            0 => json!(format!("fuzz-{}", rng.below(20))),
            1 => json!(unicode_text(rng, 40)),
            2 => json!("x".repeat(rng.size(10_000))),
            3 => json!(""),
            4 => json!("  padded  "),
            5 => json!(format!("a{}b", '\0')),
            _ => json!(ascii_text(rng, 12)),
        }
    };
    let decimal = |rng: &mut Rng| -> Value {
        if !rng.chance(wild) {
            return json!(*rng.pick(&["17.5", "15", "3", "0.0001", "9.99"]));
        }
        match rng.below(6) {
            0 => json!(1.5),
            1 => json!("9".repeat(rng.size(5_000).max(1))),
            _ => json!(*rng.pick(&[
                "0",
                "-1",
                "0.00001",
                "1e3",
                "+1",
                " 1",
                "1_000",
                "NaN",
                "١٢",
                "99999999999999999999.9999",
                "79228162514264337593543950335",
                "100.0001",
                "",
            ])),
        }
    };
    let date = |rng: &mut Rng| -> Value {
        if !rng.chance(wild) {
            return Value::Null;
        }
        json!(*rng.pick(&[
            "2027-09-01T00:00:00Z",
            "2020-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2027-02-30T00:00:00Z",
            "+275760-09-13T00:00:00Z",
            "2027-09-01T00:00:00+25:00",
            "1970-01-01T00:00:00.123456789Z",
            "2027-09-01",
            "now",
            "",
        ]))
    };
    let int = |rng: &mut Rng, lo: usize, hi: usize| -> Value {
        if !rng.chance(wild) {
            return json!(rng.between(lo, hi));
        }
        let n: i64 = *rng.pick(&[
            0,
            -1,
            1_000_000,
            1_000_001,
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            i64::from(i32::MAX) + 1,
            i64::MAX,
        ]);
        json!(n)
    };
    let id = |rng: &mut Rng, kind: &str| -> Value {
        if !rng.chance(wild) || rng.chance(50) {
            json!(base64(format!("{kind}:{}", rng.between(1, 12)).as_bytes()))
        } else {
            json!(forged_id(rng))
        }
    };
    let sku = |rng: &mut Rng| -> Value {
        if !rng.chance(wild) || rng.chance(50) {
            json!(*rng.pick(&["TS-0001-M", "HD-0002-L", "PP-0012-P1", "NOPE-1"]))
        } else {
            text(rng)
        }
    };
    let (doc, variables) = match rng.below(8) {
        0 => (
            "mutation($input: CreatePriceListInput!) { createPriceList(input: $input) { id code scope } }",
            json!({ "input": {
                "code": text(rng), "name": text(rng),
                "currency": if rng.chance(wild) {
                    *rng.pick(&["usd", "EUR", "JPY", "KWD", "", "US", "€€€"])
                } else {
                    "USD"
                },
                "priority": int(rng, 0, 10), "validFrom": date(rng), "validUntil": date(rng),
            } }),
        ),
        1 => {
            let entries: Vec<Value> = (0..rng.size(120).max(1))
                .map(|_| json!({ "sku": sku(rng), "minQuantity": int(rng, 1, 100), "amount": decimal(rng) }))
                .collect();
            (
                "mutation($list: ID!, $entries: [PriceEntryInput!]!) { setPriceEntries(priceList: $list, entries: $entries) { sku minQuantity amount } }",
                json!({ "list": id(rng, "PriceList"), "entries": entries }),
            )
        }
        2 => (
            "mutation($list: ID!, $input: QuantityRuleInput!) { setQuantityRule(priceList: $list, input: $input) { sku minQuantity maxQuantity increment } }",
            json!({ "list": id(rng, "PriceList"), "input": {
                "sku": sku(rng), "minQuantity": int(rng, 1, 10), "maxQuantity": int(rng, 10, 100),
                "increment": int(rng, 1, 5),
            } }),
        ),
        3 => (
            "mutation($input: CreatePromotionInput!) { createPromotion(input: $input) { id code } }",
            json!({ "input": {
                "code": text(rng), "name": text(rng), "discount": "PERCENT_OFF",
                "target": if rng.chance(wild) { *rng.pick(&["VARIANT", "PRODUCT", "CATEGORY"]) } else { "ALL" },
                "targetId": if rng.chance(wild) { id(rng, "Variant") } else { Value::Null },
                "value": decimal(rng), "minQuantity": int(rng, 1, 10), "startsAt": date(rng),
                "endsAt": date(rng), "stackable": rng.chance(50), "priority": int(rng, 0, 10),
            } }),
        ),
        4 => (
            "mutation($id: ID!, $input: UpdatePromotionInput!) { updatePromotion(id: $id, input: $input) { id value } }",
            json!({ "id": id(rng, "Promotion"), "input": {
                "startsAt": date(rng), "endsAt": date(rng), "priority": int(rng, 0, 10),
                "active": rng.chance(50),
            } }),
        ),
        5 => (
            "mutation($id: ID!, $input: UpdatePriceListInput!) { updatePriceList(id: $id, input: $input) { id priority } }",
            json!({ "id": id(rng, "PriceList"), "input": {
                "name": text(rng), "priority": int(rng, 0, 10), "validFrom": date(rng),
                "validUntil": date(rng), "active": rng.chance(50),
            } }),
        ),
        6 => (
            "mutation($list: ID!, $sku: String!, $min: Int!) { removePriceEntry(priceList: $list, sku: $sku, minQuantity: $min) { sku } }",
            json!({ "list": id(rng, "PriceList"), "sku": sku(rng), "min": int(rng, 1, 12) }),
        ),
        _ => (
            "mutation($list: ID!, $sku: String!) { removeQuantityRule(priceList: $list, sku: $sku) { sku } }",
            json!({ "list": id(rng, "PriceList"), "sku": sku(rng) }),
        ),
    };
    Payload {
        query: Some(doc.to_owned()),
        variables: Some(variables.to_string()),
        ..Payload::default()
    }
}

/// Random JSON text: every type, nested up to `depth`.
fn random_json(rng: &mut Rng, depth: usize) -> String {
    let top = if depth == 0 { 6 } else { 8 };
    match rng.below(top) {
        0 => "null".to_owned(),
        1 => (*rng.pick(&["true", "false"])).to_owned(),
        2 => (*rng.pick(&[
            "0",
            "-1",
            "1.5",
            "1e300",
            "-0",
            "2147483648",
            "9007199254740993",
            "1e-300",
        ]))
        .to_owned(),
        3 | 4 => json_string(&unicode_text(rng, 40)),
        5 => json_string(&ascii_upto(rng, 100)),
        6 => {
            let n = rng.size(6);
            let items: Vec<String> = (0..n).map(|_| random_json(rng, depth - 1)).collect();
            format!("[{}]", items.join(","))
        }
        _ => {
            let n = rng.size(6);
            let items: Vec<String> = (0..n)
                .map(|_| {
                    let key = if rng.chance(50) {
                        json_string(rng.pick::<&str>(NAMES))
                    } else {
                        json_string(&unicode_text(rng, 10))
                    };
                    format!("{key}:{}", random_json(rng, depth - 1))
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
    }
}

/// `extensions.persistedQuery` in every shape: known hashes, random ones, the hash of the
/// document sent (or of another), bad versions, wrong types.
fn persisted_payload(rng: &mut Rng, ctx: &Context) -> Payload {
    let (doc, variables) = rng.pick(TEMPLATES);
    let mut payload = Payload::default();
    let with_query = rng.chance(40);
    let mut query = (*doc).to_owned();
    if with_query && rng.chance(30) {
        query = mutate_document(rng, &query);
    }
    let hash = match rng.below(10) {
        0 | 1 => ctx.hashes[rng.below(ctx.hashes.len())].clone(),
        2 => ctx.hashes[rng.below(ctx.hashes.len())].to_uppercase(),
        3 | 4 => sha256_hex(&query),
        5 => (0..64)
            .map(|_| char::from(*rng.pick(b"0123456789abcdef")))
            .collect(),
        6 => {
            let len = *rng.pick(&[0, 1, 63, 65, 128, 10_000]);
            (0..len)
                .map(|_| char::from(*rng.pick(b"0123456789abcdefABCDEF")))
                .collect()
        }
        7 => (0..64).map(|_| unicode_char(rng)).collect(),
        8 => format!("{}g", &sha256_hex(&query)[..63]),
        _ => ascii_text(rng, 64),
    };
    let version = if rng.chance(75) {
        "1"
    } else {
        *rng.pick(&["2", "0", "-1", "\"1\"", "1.0", "null", "1e400", "true"])
    };
    let persisted = match rng.below(10) {
        0 => random_json(rng, 2),
        1 => format!("{{\"sha256Hash\":{}}}", json_string(&hash)),
        2 => format!("{{\"version\":{version}}}"),
        3 => format!(
            "{{\"version\":{version},\"sha256Hash\":{}}}",
            random_json(rng, 1)
        ),
        _ => format!(
            "{{\"version\":{version},\"sha256Hash\":{}}}",
            json_string(&hash)
        ),
    };
    let extensions = match rng.below(8) {
        0 => random_json(rng, 3),
        1 => format!(
            "{{\"persistedQuery\":{persisted},\"other\":{}}}",
            random_json(rng, 2)
        ),
        _ => format!("{{\"persistedQuery\":{persisted}}}"),
    };
    if with_query {
        payload.query = Some(query);
    }
    if rng.chance(60) {
        payload.variables = Some((*variables).to_owned());
    }
    payload.extensions = Some(extensions);
    payload
}

// --- Bodies --------------------------------------------------------------------------------

fn random_body(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => {
            let mut bytes = vec![0u8; rng.size(4096)];
            for b in &mut bytes {
                *b = rng.byte();
            }
            bytes
        }
        1 => {
            // JSON's alphabet, shuffled.
            let alphabet = b"{}[]\":,0123456789.-+eEtruefalsnl \\/query";
            (0..rng.size(2000)).map(|_| *rng.pick(alphabet)).collect()
        }
        2 => (*rng.pick(&[
            "",
            " ",
            "null",
            "true",
            "0",
            "\"query\"",
            "[]",
            "{}",
            "[{\"query\":\"{ channel { code } }\"}]",
            "{\"query\":null}",
            "{\"query\":\"{ channel { code } }\"}garbage",
            "{\"query\":\"{ channel { code } }\"}{\"query\":\"{ channel { code } }\"}",
            "{\"query\":\"{ channel { code } }\",\"query\":\"{ categories { id } }\"}",
            "{'query':'{ channel { code } }'}",
            "{query:\"{ channel { code } }\"}",
            "\u{feff}{\"query\":\"{ channel { code } }\"}",
            "{\"query\":\"{ channel { code } }\"/*c*/}",
            "{\"query\":\"{ channel { code } }\",}",
        ]))
        .as_bytes()
        .to_vec(),
        3 => {
            // Nested past serde_json's recursion limit.
            let depth = rng.between(100, 5000);
            let (open, close) = *rng.pick(&[("[", "]"), ("{\"a\":", "}")]);
            let mut body = format!(
                "{{\"query\":\"{{ channel {{ code }} }}\",\"variables\":{{\"v\":{}",
                open.repeat(depth)
            );
            body.push_str(&close.repeat(depth));
            body.push_str("}}");
            body.into_bytes()
        }
        4 if rng.chance(25) => {
            // Over the body limit (1 MiB).
            let mut body = b"{\"query\":\"".to_vec();
            body.extend(std::iter::repeat_n(b'a', 1_100_000));
            body.extend(b"\"}");
            body
        }
        _ => {
            // Text in other encodings: UTF-16 and Latin-1.
            let text = r#"{"query":"{ product(slug: \"caf\u00e9\") { id } }"}"#;
            if rng.chance(50) {
                text.encode_utf16().flat_map(u16::to_le_bytes).collect()
            } else {
                text.replace("\\u00e9", "\u{e9}")
                    .chars()
                    .map(|c| c as u32 as u8)
                    .collect()
            }
        }
    }
}

/// A valid body, damaged: truncated, bytes flipped or inserted, stretches deleted or
/// repeated, invalid UTF-8 inside strings.
fn garble(rng: &mut Rng, mut body: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.between(1, 4) {
        let n = body.len();
        let at = rng.below(n + 1);
        match rng.below(8) {
            0 => body.truncate(at),
            1 if n > 0 => body[at.min(n - 1)] = rng.byte(),
            2 => {
                let b = *rng.pick(b"{}[]\":,\\\0\xff\xc3");
                body.insert(at, b);
            }
            3 => {
                let end = (at + rng.size(50)).min(n);
                body.drain(at..end);
            }
            4 => {
                let end = (at + rng.size(50)).min(n);
                let run = body[at..end].to_vec();
                body.splice(at..at, run);
            }
            5 => {
                let bad: &[u8] = rng.pick::<&[u8]>(&[
                    &b"\xff\xfe"[..],
                    b"\xc3\x28",
                    b"\xed\xa0\x80",
                    b"\xf4\x90\x80\x80",
                    b"\xc0\xaf",
                    b"\\u",
                    b"\\ud800",
                    b"\\x41",
                ]);
                body.splice(at..at, bad.iter().copied());
            }
            6 => {
                let wrap: &[(&str, &str)] = &[("[", "]"), ("{\"query\":", "}"), ("\"", "\"")];
                let (open, close) = rng.pick(wrap);
                body.splice(0..0, open.bytes());
                body.extend(close.bytes());
            }
            _ => body.extend(ascii_upto(rng, 20).into_bytes()),
        }
    }
    body
}

/// A body whose `query`, `variables`, `operationName` or `extensions` has the wrong type.
fn mistyped_body(rng: &mut Rng) -> String {
    let mut fields = Vec::new();
    let good_query = json_string("{ channel { code } }");
    let value = |rng: &mut Rng| random_json(rng, 3);
    let query = match rng.below(3) {
        0 => Some(value(rng)),
        1 => None,
        _ => Some(good_query),
    };
    if let Some(query) = query {
        fields.push(format!("\"query\":{query}"));
    }
    for name in ["variables", "operationName", "extensions"] {
        if rng.chance(50) {
            fields.push(format!("\"{name}\":{}", value(rng)));
        }
    }
    if rng.chance(20) {
        fields.push(format!(
            "{}:{}",
            json_string(&unicode_text(rng, 10)),
            value(rng)
        ));
    }
    format!("{{{}}}", fields.join(","))
}

// --- Query strings, methods and routes --------------------------------------------------

fn raw_query_string(rng: &mut Rng) -> String {
    const PIECES: &[&str] = &[
        "query=",
        "variables=",
        "operationName=",
        "extensions=",
        "&",
        "=",
        "+",
        "%",
        "%Z",
        "%ZZ",
        "%C3%28",
        "%00",
        "%FF",
        "%ED%A0%80",
        "%7B",
        "%7D",
        "%22",
        "query",
        "{",
        "}",
        "%20",
        ";",
        "[]",
        "query[]=",
        "query[a]=",
        "%26",
        "%3D",
        "#",
    ];
    let mut out = String::new();
    for _ in 0..rng.size(60).max(1) {
        if rng.chance(70) {
            out.push_str(rng.pick::<&str>(PIECES));
        } else {
            out.push_str(&percent_encode(
                unicode_text(rng, 6).replace('#', "").as_bytes(),
            ));
        }
    }
    out.replace('#', "%23")
}

fn other_route(rng: &mut Rng, case: &mut Case) {
    match rng.below(3) {
        0 => {
            case.method = rng
                .pick(&[Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS])
                .clone();
            if rng.chance(50) {
                case.body = Some(template_payload(rng).to_json().into_bytes());
            }
        }
        1 => {
            case.method = Method::GET;
            case.target = format!(
                "/graphql/assets/{}",
                percent_encode(unicode_text(rng, 40).as_bytes())
            );
        }
        _ => {
            case.method = rng.pick(&[Method::GET, Method::POST]).clone();
            case.target = (*rng.pick(&[
                "/graphql/",
                "/GRAPHQL",
                "/graphql//",
                "/%67raphql",
                "/graphql%00",
                "/graphql/assets/",
                "/graphql/assets/..%2F..%2FCargo.toml",
                "//graphql",
                "/",
                "/graphql;x",
            ]))
            .to_owned();
        }
    }
}

// --- Headers --------------------------------------------------------------------------------

/// Headers for every case: mostly sensible, with hostile ones mixed in (and on the
/// "hostile headers" cases, mostly hostile).
fn headers(rng: &mut Rng, case: &mut Case, ctx: &Context) {
    // On "hostile headers" cases one or two headers are hostile and the others sensible, so
    // a hostile value gets past the others to the code that reads it.
    let mut wild = [false; 5];
    if case.kind == "hostile headers" {
        for _ in 0..rng.between(1, 2) {
            wild[rng.below(wild.len())] = true;
        }
    }
    let [content, channel, auth, accepts, request_id] = wild;
    if case.body.is_some() {
        let value = if content || rng.chance(8) {
            content_type(rng)
        } else {
            b"application/json".to_vec()
        };
        case.set_header("content-type", value);
    }
    if channel {
        let value = channel_header(rng);
        case.set_header("x-channel", value);
    } else if rng.chance(25) {
        let value = rng.pick(&["web", "b2b", "mobile", "pos", "WEB"]);
        case.set_header("x-channel", value.as_bytes().to_vec());
    }
    if auth || rng.chance(15) {
        let value = if auth || rng.chance(30) {
            authorization(rng, ctx)
        } else {
            format!("Bearer {}", rng.pick(&ctx.tokens)).into_bytes()
        };
        case.set_header("authorization", value);
    }
    if accepts || rng.chance(20) {
        let value = if accepts || rng.chance(20) {
            accept(rng)
        } else {
            rng.pick(&["application/json", GRAPHQL_RESPONSE_JSON, "*/*"])
                .as_bytes()
                .to_vec()
        };
        case.set_header("accept", value);
    }
    if request_id {
        let id = header_text(rng, 200);
        case.set_header("x-request-id", id);
    }
}

/// Visible ASCII, spaces and tabs, UTF-8 and bytes that are not UTF-8 (as HTTP allows).
fn header_text(rng: &mut Rng, max: usize) -> Vec<u8> {
    match rng.below(4) {
        0 => unicode_text(rng, max).into_bytes(),
        1 => (0..rng.size(max))
            .map(|_| rng.between(0x80, 0xFF) as u8)
            .collect(),
        _ => {
            let len = rng.size(max);
            ascii_text(rng, len).into_bytes()
        }
    }
}

/// Header values may not hold control characters other than tab: those become `?`.
fn header_safe(mut value: Vec<u8>) -> Vec<u8> {
    for b in &mut value {
        if (*b < 0x20 && *b != b'\t') || *b == 0x7F {
            *b = b'?';
        }
    }
    value
}

fn channel_header(rng: &mut Rng) -> Vec<u8> {
    match rng.below(8) {
        0 | 1 => {
            let channel = *rng.pick(&["web", "mobile", "pos", "b2b"]);
            let cased: String = channel
                .chars()
                .map(|c| {
                    if rng.chance(30) {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect();
            let pad = *rng.pick(&["", " ", "\t", "  "]);
            format!("{pad}{cased}{pad}").into_bytes()
        }
        2 => rng
            .pick(&[
                "",
                " ",
                "\t",
                "default",
                "null",
                "*",
                "../pos",
                "web,pos",
                "web pos",
                "web;",
                "unknown",
                "WEB\tPOS",
                "wéb",
                "ｗｅｂ",
                "web\u{200b}",
                "İ",
                "K",
            ])
            .as_bytes()
            .to_vec(),
        3 => {
            // Very long.
            let len = rng.size(32_000);
            rng.pick(&["w", "é", "🦀"]).repeat(len / 2).into_bytes()
        }
        _ => header_text(rng, 100),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random_segment(rng: &mut Rng) -> String {
    let mut bytes = vec![0u8; rng.size(300)];
    for b in &mut bytes {
        *b = rng.byte();
    }
    base64(&bytes)
}

fn authorization(rng: &mut Rng, ctx: &Context) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = json!({
        "sub": "admin@web", "iss": "commerce-gateway", "aud": "commerce-api",
        "exp": now + 600, "nbf": now - 10, "iat": now, "channel": "web", "role": "admin",
    });
    let token = match rng.below(10) {
        0 => rng.pick(&ctx.tokens).clone(),
        1 => {
            // alg none, in several spellings, with and without a signature.
            let alg = *rng.pick(&["none", "None", "NONE", "nOnE", ""]);
            let header = base64(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#).as_bytes());
            let sig = if rng.chance(50) {
                String::new()
            } else {
                random_segment(rng)
            };
            format!("{header}.{}.{sig}", base64(claims.to_string().as_bytes()))
        }
        2 => {
            // Random base64 segments, two to five of them.
            let n = rng.between(2, 5);
            (0..n)
                .map(|_| random_segment(rng))
                .collect::<Vec<_>>()
                .join(".")
        }
        3 => {
            // A valid token, altered: truncated, a character changed, segments swapped, or
            // re-headed with another algorithm (confusion attempts).
            let token = rng.pick(&ctx.tokens).clone();
            let parts: Vec<&str> = token.split('.').collect();
            match rng.below(4) {
                0 => token[..rng.below(token.len())].to_owned(),
                1 => {
                    let mut bytes = token.into_bytes();
                    let i = rng.below(bytes.len());
                    bytes[i] = *rng.pick(b"AZaz09-_.=+/");
                    String::from_utf8(bytes).unwrap_or_default()
                }
                2 => format!("{}.{}.{}", parts[1], parts[0], parts[2]),
                _ => {
                    let alg = *rng.pick(&["HS512", "RS256", "ES256", "PS256", "EdDSA", "HS256"]);
                    let kid = *rng.pick(&[
                        "",
                        ",\"kid\":\"../../../dev/null\"",
                        ",\"kid\":1",
                        ",\"jku\":\"http://127.0.0.1:1/\"",
                    ]);
                    let header =
                        base64(format!(r#"{{"alg":"{alg}","typ":"JWT"{kid}}}"#).as_bytes());
                    format!("{header}.{}.{}", parts[1], parts[2])
                }
            }
        }
        4 | 8 | 9 => signed_weird_claims(rng, ctx),
        5 => {
            // Readable segments of random JSON.
            let header = if rng.chance(50) {
                random_json(rng, 2)
            } else {
                r#"{"alg":"HS256","typ":"JWT"}"#.to_owned()
            };
            format!(
                "{}.{}.{}",
                base64(header.as_bytes()),
                base64(random_json(rng, 3).as_bytes()),
                random_segment(rng)
            )
        }
        6 => "A".repeat(rng.size(16_000)),
        _ => String::from_utf8_lossy(&header_text(rng, 200)).into_owned(),
    };
    let scheme = if rng.chance(80) {
        "Bearer "
    } else {
        *rng.pick(&[
            "bearer ",
            "BEARER  ",
            "Bearer",
            "Bearer\t",
            "Basic ",
            "Token ",
            "",
            " Bearer ",
            "Bearer Bearer ",
        ])
    };
    let mut value = format!("{scheme}{token}").into_bytes();
    if rng.chance(5) {
        value = header_text(rng, 300);
    }
    value
}

/// Tokens signed with the gateway's own secret whose claims no client could get from the
/// `token` command: unknown or odd channels, customers and stores, expired or future windows.
fn signed_weird_claims(rng: &mut Rng, ctx: &Context) -> String {
    let role = *rng.pick(&Role::ALL);
    let mut claims = ctx.auth.claims("web", role, None, None, Some(600));
    let odd = |rng: &mut Rng| -> String {
        match rng.below(7) {
            0 => format!("a{}b", '\0'),
            6 => format!(
                "{}\0",
                rng.pick(&["shopper@example.com", "web", "STORE-MALL"])
            ),
            1 => unicode_text(rng, 30),
            2 => "x".repeat(rng.size(10_000)),
            3 => String::new(),
            4 => "' OR 1=1 --".to_owned(),
            _ => ascii_text(rng, 20),
        }
    };
    claims.channel = match rng.below(4) {
        0 => odd(rng),
        _ => (*rng.pick(&["web", "b2b", "pos", "mobile", "WEB", "nope"])).to_owned(),
    };
    claims.customer = match rng.below(4) {
        0 => None,
        1 => Some(odd(rng)),
        _ => Some(
            (*rng.pick(&[
                "shopper@example.com",
                "vip@example.com",
                "buyer@acme.example",
                "nobody@example.com",
            ]))
            .to_owned(),
        ),
    };
    claims.store = match rng.below(4) {
        0 => None,
        1 => Some(odd(rng)),
        _ => Some((*rng.pick(&["STORE-DOWNTOWN", "STORE-MALL", "WH-EAST", "nope"])).to_owned()),
    };
    if rng.chance(30) {
        claims.sub = odd(rng);
    }
    match rng.below(8) {
        0 => claims.exp = 0,
        1 => claims.exp = u64::MAX,
        2 => claims.nbf = u64::MAX,
        3 => claims.nbf = claims.exp,
        4 => claims.iss = odd(rng),
        _ => {}
    }
    ctx.auth
        .mint(&claims)
        .expect("the test gateway has a secret")
}

fn accept(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 | 1 => rng
            .pick(&[
                "application/json",
                GRAPHQL_RESPONSE_JSON,
                "*/*",
                "application/*",
                "text/html",
                "text/html,application/json",
                "text/plain",
                "",
                "application/json;q=0",
                "application/json;q=abc",
                "application/json;q=-1",
                "application/json;q=NaN",
                "application/json;q=inf",
                "application/json;q=1e999",
                "application/graphql-response+json;q=0.5, application/json;q=0.5",
                "application/graphql-response+json;charset=utf-8",
                "image/png",
                ";;;,,,",
                "*",
                "application/json;;q=;",
                "APPLICATION/JSON",
            ])
            .as_bytes()
            .to_vec(),
        2 => {
            let n = rng.size(500).max(1);
            (0..n)
                .map(|i| format!("type{i}/sub;q=0.{}", i % 10))
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes()
        }
        _ => header_text(rng, 200),
    }
}

fn content_type(rng: &mut Rng) -> Vec<u8> {
    match rng.below(3) {
        0 | 1 => rng
            .pick(&[
                "application/json; charset=utf-8",
                "Application/JSON; Charset=\"UTF-8\"",
                "application/json; charset=latin1",
                "application/json;",
                "application/json; charset",
                "application/json; charset=utf-8; charset=latin1",
                "application/graphql",
                GRAPHQL_RESPONSE_JSON,
                "text/plain",
                "",
                "multipart/form-data; boundary=----x",
                "application/x-www-form-urlencoded",
                "application/json\t",
                " application/json",
                "application/jsonp",
                "application/json, text/plain",
            ])
            .as_bytes()
            .to_vec(),
        _ => header_text(rng, 200),
    }
}

// --- Text helpers -------------------------------------------------------------------------

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
            i += 1;
        }
    }
    out
}

fn clip(text: &str, limit: usize) -> String {
    let escaped: String = text.escape_debug().collect();
    let count = escaped.chars().count();
    if count <= limit {
        escaped
    } else {
        let head: String = escaped.chars().take(limit).collect();
        format!("{head}… ({count} characters in all)")
    }
}

// ---------------------------------------------------------------------------------------------
// Sending and judging.

struct Outcome {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

async fn send(http: &reqwest::Client, base: &str, case: &Case) -> Result<Outcome, String> {
    let mut request = http.request(case.method.clone(), format!("{base}{}", case.target));
    for (name, value) in &case.headers {
        let value = HeaderValue::from_bytes(value)
            .map_err(|err| format!("the generator made an invalid header value: {err}"))?;
        request = request.header(*name, value);
    }
    if let Some(body) = &case.body {
        request = request.body(body.clone());
    }
    let response = request.send().await.map_err(|err| {
        let mut message = format!("no answer: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            let _ = write!(message, ": {cause}");
            source = cause.source();
        }
        message
    })?;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .bytes()
        .await
        .map_err(|err| format!("the body broke off: {err}"))?;
    Ok(Outcome {
        status,
        content_type,
        body: body.to_vec(),
    })
}

/// Why an answer is wrong, if it is.
fn judge(case: &Case, outcome: &Outcome, codes: &[String]) -> Result<(), String> {
    let status = outcome.status;
    if status.is_server_error() || !(status.is_success() || status.is_client_error()) {
        return Err(format!("status {status}"));
    }
    let text = String::from_utf8_lossy(&outcome.body).to_lowercase();
    let mut request = None;
    for marker in LEAK_MARKERS {
        if text.contains(marker)
            && !request
                .get_or_insert_with(|| case.text_lower())
                .contains(marker)
        {
            return Err(format!("internal detail {marker:?} in the body"));
        }
    }
    if outcome.content_type.starts_with("text/html") {
        let asked_for_html = case.method == Method::GET
            && case.target.split('?').next() == Some("/graphql")
            && case
                .header("accept")
                .is_some_and(|a| a.contains("text/html"));
        return if asked_for_html && status == StatusCode::OK {
            Ok(())
        } else {
            Err("an HTML answer to a request that did not ask for GraphiQL".to_owned())
        };
    }
    if !(outcome.content_type.starts_with("application/json")
        || outcome.content_type.starts_with(GRAPHQL_RESPONSE_JSON))
    {
        return Err(format!("content type {:?}", outcome.content_type));
    }
    let body: Value =
        serde_json::from_slice(&outcome.body).map_err(|_| "the body is not JSON".to_owned())?;
    let Value::Object(object) = &body else {
        return Err("the body is not a JSON object".to_owned());
    };
    match object.get("errors") {
        None => {
            if !status.is_success() {
                return Err(format!("a {status} without errors"));
            }
            if !object.contains_key("data") {
                return Err("neither data nor errors".to_owned());
            }
        }
        Some(Value::Array(errors)) if !errors.is_empty() => {
            for error in errors {
                let Some(message) = error["message"].as_str() else {
                    return Err("an error without a message".to_owned());
                };
                // The README's bounded output: messages of at most 300 characters (301 with
                // the ellipsis that marks a cut).
                if message.chars().count() > 301 {
                    return Err(format!(
                        "a message of {} characters",
                        message.chars().count()
                    ));
                }
                let Some(code) = error["extensions"]["code"].as_str() else {
                    return Err("an error without extensions.code".to_owned());
                };
                if !codes.iter().any(|known| known == code) {
                    return Err(format!("code {code:?} is not in the README's list"));
                }
                if code == "INTERNAL" {
                    return Err("INTERNAL: a failure on the gateway's side".to_owned());
                }
                if code == "RATE_LIMITED" {
                    return Err("RATE_LIMITED with rate limits off".to_owned());
                }
            }
            if !status.is_success() && object.contains_key("data") {
                return Err(format!("a {status} with data"));
            }
        }
        Some(_) => return Err("`errors` is not a non-empty array".to_owned()),
    }
    Ok(())
}

/// A failed case, for the report.
fn report(seed: u64, case: &Case, outcome: &Result<Outcome, String>, why: &str) -> String {
    let mut out = format!("seed {seed:#x}, {}", case.describe(600));
    match outcome {
        Ok(outcome) => {
            let _ = writeln!(
                out,
                "  answer: {} {:?} {}",
                outcome.status,
                outcome.content_type,
                clip(&String::from_utf8_lossy(&outcome.body), 800)
            );
        }
        Err(err) => {
            let _ = writeln!(out, "  answer: none ({err})");
        }
    }
    let _ = writeln!(out, "  why: {why}");
    let _ = writeln!(
        out,
        "  replay: FUZZ_SEED={seed:#x} FUZZ_CASE={} cargo test -p e2e --test e2e fuzz:: -- --nocapture",
        case.index
    );
    out
}

fn parse_number(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn env_number(name: &str) -> Option<u64> {
    parse_number(&std::env::var(name).ok()?)
}

/// `FUZZ_CASE=<index>` or `FUZZ_CASE=<from>..<to>`: the cases to replay.
fn replay_range() -> Option<std::ops::Range<usize>> {
    let text = std::env::var("FUZZ_CASE").ok()?;
    let (from, to) = match text.split_once("..") {
        Some((from, to)) => (parse_number(from)?, parse_number(to)?),
        None => {
            let index = parse_number(&text)?;
            (index, index + 1)
        }
    };
    Some(from as usize..to as usize)
}

/// The health query answers 200 with data.
async fn assert_serving(url: &str, after: &str) {
    let reply = Client::new(url)
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "the health query failed {after}: {}",
        reply.text
    );
    assert_eq!(
        reply.body["data"]["channel"]["code"], "web",
        "the health query failed {after}: {}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_malformed_requests_never_break_the_gateway() {
    let seed = env_number("FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases_total = env_number("FUZZ_CASES").map_or(DEFAULT_CASES, |n| n as usize);
    let replay = replay_range();
    let codes = readme_codes();
    // Mobile and POS run safelisted operations only, as in production.
    let app = spawn_app_with(|config| {
        config.persisted.persisted_only_channels = vec!["mobile".to_owned(), "pos".to_owned()];
    })
    .await;
    assert!(
        !app.gateway.state.limits.enabled(),
        "rate limits stay off in this test"
    );
    let url = app.gateway.url();
    let mut hashes = Vec::new();
    for channel in ["mobile", "pos"] {
        let dir = e2e::operations_dir().join(channel);
        for entry in std::fs::read_dir(&dir).expect("the operations folder") {
            let text = std::fs::read_to_string(entry.expect("an entry").path()).expect("a file");
            hashes.push(sha256_hex(&text));
        }
    }
    let ctx = Context {
        auth: app.gateway.state.auth.clone(),
        tokens: vec![
            app.token("web", Role::Admin, None, None),
            app.token("pos", Role::Admin, None, None),
            app.token("pos", Role::PosClerk, None, Some("STORE-DOWNTOWN")),
            app.token("b2b", Role::B2bBuyer, Some("buyer@acme.example"), None),
            app.token("web", Role::Shopper, Some("shopper@example.com"), None),
            app.token("mobile", Role::Shopper, Some("vip@example.com"), None),
        ],
        hashes,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let indices: Vec<usize> = match &replay {
        Some(range) => range.clone().collect(),
        None => (0..cases_total).collect(),
    };
    // A replay sends one case at a time and names it first, so a case that kills the
    // process is the last one named.
    let in_flight = if replay.is_some() { 1 } else { IN_FLIGHT };
    let in_flight_log =
        std::env::temp_dir().join(format!("e2e-fuzz-in-flight-{}.txt", std::process::id()));
    let started = Instant::now();
    let mut failures: Vec<String> = Vec::new();
    let mut by_reason: BTreeMap<String, usize> = BTreeMap::new();
    // Per kind: requests, and answers that carry data (the operation ran).
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut with_data = 0;
    let mut slowest = (Duration::ZERO, 0usize);
    for batch in indices.chunks(BATCH) {
        let cases: Vec<Case> = batch.iter().map(|&i| generate(seed, i, &ctx)).collect();
        let mut log = format!("seed {seed:#x}: cases in flight\n");
        for case in &cases {
            log.push_str(&case.describe(300));
        }
        let _ = std::fs::write(&in_flight_log, log);
        // The workers take the batch's cases in turn.
        let cases = Arc::new(cases);
        let next = Arc::new(AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..in_flight {
            let (cases, next, http, url) = (cases.clone(), next.clone(), http.clone(), url.clone());
            let loud = replay.is_some();
            workers.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(case) = cases.get(i) else { break };
                    if loud {
                        eprintln!("sending {}", case.describe(2000));
                    }
                    let sent = Instant::now();
                    let outcome = send(&http, &url, case).await;
                    done.push((i, outcome, sent.elapsed()));
                }
                done
            });
        }
        let mut results = Vec::new();
        while let Some(done) = workers.join_next().await {
            results.extend(done.expect("a worker finishes"));
        }
        results.sort_by_key(|(i, _, _)| *i);
        for (i, outcome, took) in results {
            let case = &cases[i];
            by_kind.entry(case.kind).or_default().0 += 1;
            if took > slowest.0 {
                slowest = (took, case.index);
            }
            let verdict = match &outcome {
                Ok(answer) => {
                    *by_status.entry(answer.status.as_u16()).or_default() += 1;
                    if let Ok(body) = serde_json::from_slice::<Value>(&answer.body) {
                        if body.get("data").is_some_and(|d| !d.is_null()) {
                            with_data += 1;
                            by_kind.entry(case.kind).or_default().1 += 1;
                        }
                        for error in body["errors"].as_array().into_iter().flatten() {
                            let code = error["extensions"]["code"].as_str().unwrap_or("-");
                            *by_code.entry(code.to_owned()).or_default() += 1;
                        }
                    }
                    judge(case, answer, &codes)
                }
                Err(err) => Err(err.clone()),
            };
            if replay.is_some() {
                eprintln!(
                    "{}",
                    report(
                        seed,
                        case,
                        &outcome,
                        verdict
                            .as_ref()
                            .err()
                            .map_or("none: the answer is fine", String::as_str)
                    )
                );
            }
            if let Err(why) = verdict {
                *by_reason.entry(why.clone()).or_default() += 1;
                failures.push(report(seed, case, &outcome, &why));
            }
        }
        let (first, last) = (batch[0], batch[batch.len() - 1]);
        let health = tokio::time::timeout(
            Duration::from_secs(60),
            assert_serving(
                &url,
                &format!("after cases {first}..={last} (seed {seed:#x})"),
            ),
        )
        .await;
        if health.is_err() {
            panic!(
                "the gateway stopped answering after cases {first}..={last} (seed {seed:#x}); \
                 failures so far:\n{}",
                failures.join("\n")
            );
        }
    }
    let elapsed = started.elapsed();
    // Still serving at the end, and ready.
    assert_serving(&url, "at the end").await;
    let ready = reqwest::get(format!("{url}/readyz"))
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), StatusCode::OK);
    let _ = std::fs::remove_file(&in_flight_log);
    eprintln!(
        "fuzz: seed {seed:#x}, {} requests in {:.1} s ({} with data); slowest case {} took {} ms\n  kinds (requests, with data): {by_kind:?}\n  statuses: {by_status:?}\n  codes: {by_code:?}",
        indices.len(),
        elapsed.as_secs_f64(),
        with_data,
        slowest.1,
        slowest.0.as_millis()
    );
    if let Ok(path) = std::env::var("FUZZ_REPORT") {
        let _ = std::fs::write(path, failures.join("\n"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} generated requests were answered wrongly (seed {seed:#x}): {by_reason:?}; \
         the first ones (all with FUZZ_REPORT=<file>):\n{}",
        failures.len(),
        indices.len(),
        failures
            .iter()
            .take(12)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
