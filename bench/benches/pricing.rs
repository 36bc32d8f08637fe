//! Price resolution under load: `resolve_price` for one variant with 10,000 candidate entries
//! (50 lists over every scope level, 8 volume tiers each, 60 promotions of the three kinds,
//! some stackable), against a baseline of the same call with one list and one entry.
//!
//! `cargo bench -p bench --bench pricing -- --warm-up-time 1 --measurement-time 3`
//!
//! Criterion prints the time per price of each case; after its groups, a short interleaved
//! `Instant` loop over both cases prints ns per price and the ratio 10k-candidates / baseline,
//! the figure to compare between runs (it cancels most of the machine's speed).

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use commerce_core::pricing::{
    Discount, PriceCandidates, PriceEntry, PriceListInfo, PriceScope, PriceViewer, PricedItem,
    PromotionInfo, PromotionTarget, QuantityRule, resolve_price,
};
use criterion::{Criterion, Throughput};
use rust_decimal::Decimal;

const ENTRIES: usize = 10_000;
const LISTS: usize = 50;
const PROMOTIONS_PER_KIND: usize = 20;
const TIERS: [i32; 8] = [1, 2, 5, 10, 25, 50, 100, 250];
const QUANTITY: i32 = 30;

/// The owned data behind a [`PriceCandidates`].
struct Candidates {
    lists: Vec<PriceListInfo>,
    entries: Vec<PriceEntry>,
    rules: Vec<QuantityRule>,
    promotions: Vec<PromotionInfo>,
}

impl Candidates {
    fn view(&self) -> PriceCandidates<'_> {
        PriceCandidates {
            lists: &self.lists,
            entries: &self.entries,
            rules: &self.rules,
            promotions: &self.promotions,
        }
    }
}

/// A deterministic generator, so every run prices the same data.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 15, 12, 0, 0).unwrap()
}

fn item() -> PricedItem {
    PricedItem {
        variant_id: 101,
        product_id: 11,
        category_path: vec![3, 2, 1],
    }
}

/// A signed-in customer of a company in a group, so every scope level can apply.
fn viewer() -> PriceViewer {
    PriceViewer {
        channel_id: 1,
        currency: "EUR".into(),
        customer_id: Some(7),
        company_id: Some(4),
        group_id: Some(2),
    }
}

fn cents(minor: i64) -> Decimal {
    Decimal::new(minor, 2)
}

/// 50 lists (10 per scope level; some for another viewer, currency or window, or inactive),
/// 10,000 entries (200 per list: 8 tiers, each repeated with different amounts, shuffled),
/// one quantity rule per list, and 20 promotions of each discount kind with mixed targets,
/// restrictions and stackability.
fn large() -> Candidates {
    let mut rng = Lcg(0x5eed);
    let now = now();
    let lists: Vec<PriceListInfo> = (0..LISTS)
        .map(|i| {
            let id = i as i64 + 1;
            // Half the lists of each scoped level are for this viewer, half for someone else.
            let mine = i % 2 == 0;
            let other = |own: i64| if mine { own } else { own + 100 };
            let scope = match i % 5 {
                0 => PriceScope::Base,
                1 => PriceScope::Channel(other(1)),
                2 => PriceScope::Group(other(2)),
                3 => PriceScope::Company(other(4)),
                _ => PriceScope::Customer(other(7)),
            };
            PriceListInfo {
                id,
                code: format!("list-{id}"),
                name: format!("List {id}"),
                currency: if i % 7 == 6 { "USD" } else { "EUR" }.into(),
                scope,
                priority: (i % 4) as i32,
                valid_from: (i % 9 == 4).then(|| now + chrono::Duration::days(1)),
                valid_until: (i % 11 == 5).then(|| now - chrono::Duration::days(1)),
                active: i % 13 != 12,
            }
        })
        .collect();
    let mut entries: Vec<PriceEntry> = (0..ENTRIES)
        .map(|i| {
            let list_id = (i % LISTS) as i64 + 1;
            let tier = TIERS[(i / LISTS) % TIERS.len()];
            PriceEntry {
                list_id,
                min_quantity: tier,
                amount: cents(10_000 - 20 * i64::from(tier) - rng.below(500) as i64),
            }
        })
        .collect();
    // Shuffle (Fisher–Yates) so neither list nor tier order helps the scan.
    for i in (1..entries.len()).rev() {
        entries.swap(i, rng.below(i + 1));
    }
    let rules = lists
        .iter()
        .map(|list| QuantityRule {
            id: list.id,
            list_id: list.id,
            min_quantity: 1,
            max_quantity: Some(10_000),
            increment: 1,
        })
        .collect();
    let mut promotions = Vec::new();
    for kind in 0..3 {
        for j in 0..PROMOTIONS_PER_KIND {
            let id = (kind * PROMOTIONS_PER_KIND + j) as i64 + 1;
            let discount = match kind {
                0 => Discount::PercentOff(Decimal::from(2 + j as i64 % 8)),
                1 => Discount::AmountOff {
                    amount: cents(50 + 25 * j as i64),
                    currency: if j % 6 == 5 { "USD" } else { "EUR" }.into(),
                },
                _ => Discount::FixedPrice {
                    amount: cents(9_000 - 40 * j as i64),
                    currency: "EUR".into(),
                },
            };
            let target = match j % 7 {
                0 => PromotionTarget::All,
                1 => PromotionTarget::Variant(101),
                2 => PromotionTarget::Variant(999),
                3 => PromotionTarget::Product(11),
                4 => PromotionTarget::Product(99),
                5 => PromotionTarget::Category(2),
                _ => PromotionTarget::Category(42),
            };
            promotions.push(PromotionInfo {
                id,
                code: format!("promo-{id}"),
                name: format!("Promotion {id}"),
                channel_id: (j % 4 == 1).then_some(if j % 8 == 1 { 1 } else { 5 }),
                group_id: (j % 5 == 2).then_some(2),
                target,
                discount,
                min_quantity: if j % 3 == 2 {
                    50
                } else {
                    1 + (j % 3) as i32 * 10
                },
                starts_at: (j % 10 == 9).then(|| now + chrono::Duration::hours(1)),
                ends_at: (j % 6 == 0).then(|| now + chrono::Duration::days(7)),
                stackable: j % 3 == 0,
                priority: (j % 5) as i32,
                active: j % 17 != 16,
            });
        }
    }
    Candidates {
        lists,
        entries,
        rules,
        promotions,
    }
}

/// One base list, one entry, nothing else.
fn minimal() -> Candidates {
    Candidates {
        lists: vec![PriceListInfo {
            id: 1,
            code: "base".into(),
            name: "Base".into(),
            currency: "EUR".into(),
            scope: PriceScope::Base,
            priority: 0,
            valid_from: None,
            valid_until: None,
            active: true,
        }],
        entries: vec![PriceEntry {
            list_id: 1,
            min_quantity: 1,
            amount: cents(9_990),
        }],
        rules: Vec::new(),
        promotions: Vec::new(),
    }
}

struct Case {
    name: &'static str,
    candidates: Candidates,
}

fn cases() -> [Case; 2] {
    [
        Case {
            name: "10k_candidates",
            candidates: large(),
        },
        Case {
            name: "baseline_1_entry",
            candidates: minimal(),
        },
    ]
}

fn price_once(candidates: &PriceCandidates<'_>, item: &PricedItem, viewer: &PriceViewer) {
    let price = resolve_price(
        black_box(item),
        black_box(QUANTITY),
        black_box(viewer),
        black_box(now()),
        black_box(candidates),
    );
    black_box(price.expect("the benchmark data prices the item"));
}

/// Mean ns per price over `budget` of back-to-back calls.
fn ns_per_price(candidates: &PriceCandidates<'_>, budget: Duration) -> f64 {
    let (item, viewer) = (item(), viewer());
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < budget {
        for _ in 0..16 {
            price_once(candidates, &item, &viewer);
        }
        calls += 16;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let cases = cases();
    let (item, viewer) = (item(), viewer());
    for case in &cases {
        let c = case.candidates.view();
        let price = resolve_price(&item, QUANTITY, &viewer, now(), &c).expect("prices");
        println!(
            "{}: {} lists, {} entries, {} rules, {} promotions -> {} list {} unit {} x{} = {} ({} rules applied)",
            case.name,
            c.lists.len(),
            c.entries.len(),
            c.rules.len(),
            c.promotions.len(),
            price.tier.list_code,
            price.list_unit_price,
            price.unit_price,
            price.quantity,
            price.line_total,
            price.applied_rules.len()
        );
    }

    let mut criterion = Criterion::default().configure_from_args();
    {
        let mut group = criterion.benchmark_group("resolve_price");
        group.throughput(Throughput::Elements(1));
        for case in &cases {
            let c = case.candidates.view();
            group.bench_function(case.name, |b| b.iter(|| price_once(&c, &item, &viewer)));
        }
        group.finish();
    }
    criterion.final_summary();

    // `cargo bench` passes `--bench`; `cargo test --benches` does not and only smoke-tests.
    let benching = std::env::args().any(|a| a == "--bench");
    let (rounds, budget) = if benching {
        (7, Duration::from_millis(300))
    } else {
        (1, Duration::from_millis(5))
    };
    // Interleave the two cases so drift on a shared machine hits both alike.
    let mut timings = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (case, times) in cases.iter().zip(&mut timings) {
            times.push(ns_per_price(&case.candidates.view(), budget));
        }
    }
    let [large, baseline] = timings.map(median);
    println!();
    println!(
        "time per price (median of {rounds} interleaved rounds of {} ms):",
        budget.as_millis()
    );
    println!(
        "  10k_candidates    {:>12.0} ns  ({:.1} µs)",
        large,
        large / 1000.0
    );
    println!("  baseline_1_entry  {:>12.0} ns", baseline);
    println!(
        "ratio 10k_candidates / baseline_1_entry: {:.0}",
        large / baseline
    );
}
