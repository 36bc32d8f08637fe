//! Table-driven tests of every rule and tie of price resolution, and property tests of its
//! invariants.

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

const CHANNEL: i64 = 1;
const OTHER_CHANNEL: i64 = 2;
const GROUP: i64 = 10;
const COMPANY: i64 = 20;
const CUSTOMER: i64 = 30;

fn d(text: &str) -> Decimal {
    text.parse().unwrap()
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

fn item() -> PricedItem {
    PricedItem {
        variant_id: 100,
        product_id: 200,
        category_path: vec![300, 301],
    }
}

fn anonymous() -> PriceViewer {
    PriceViewer::anonymous(CHANNEL, "USD")
}

fn buyer() -> PriceViewer {
    PriceViewer {
        channel_id: CHANNEL,
        currency: "USD".into(),
        customer_id: Some(CUSTOMER),
        company_id: Some(COMPANY),
        group_id: Some(GROUP),
    }
}

fn list(id: i64, scope: PriceScope, priority: i32) -> PriceListInfo {
    PriceListInfo {
        id,
        code: format!("list-{id}"),
        name: format!("List {id}"),
        currency: "USD".into(),
        scope,
        priority,
        valid_from: None,
        valid_until: None,
        active: true,
    }
}

fn entry(list_id: i64, min_quantity: i32, amount: &str) -> PriceEntry {
    PriceEntry {
        list_id,
        min_quantity,
        amount: d(amount),
    }
}

fn promo(id: i64, discount: Discount, stackable: bool, priority: i32) -> PromotionInfo {
    PromotionInfo {
        id,
        code: format!("P{id}"),
        name: format!("Promotion {id}"),
        channel_id: None,
        group_id: None,
        target: PromotionTarget::All,
        discount,
        min_quantity: 1,
        starts_at: None,
        ends_at: None,
        stackable,
        priority,
        active: true,
    }
}

fn percent(p: &str) -> Discount {
    Discount::PercentOff(d(p))
}

fn amount_off(a: &str) -> Discount {
    Discount::AmountOff {
        amount: d(a),
        currency: "USD".into(),
    }
}

fn price(
    viewer: &PriceViewer,
    quantity: i32,
    lists: &[PriceListInfo],
    entries: &[PriceEntry],
    rules: &[QuantityRule],
    promotions: &[PromotionInfo],
) -> Result<PriceBreakdown, PricingError> {
    resolve_price(
        &item(),
        quantity,
        viewer,
        now(),
        &PriceCandidates {
            lists,
            entries,
            rules,
            promotions,
        },
    )
}

fn winning_list(viewer: &PriceViewer, lists: &[PriceListInfo], entries: &[PriceEntry]) -> i64 {
    price(viewer, 1, lists, entries, &[], &[])
        .unwrap()
        .tier
        .list_id
}

#[test]
fn the_most_specific_level_wins_whatever_the_priorities() {
    let lists = [
        list(1, PriceScope::Base, 100),
        list(2, PriceScope::Channel(CHANNEL), 50),
        list(3, PriceScope::Group(GROUP), 10),
        list(4, PriceScope::Company(COMPANY), 5),
        list(5, PriceScope::Customer(CUSTOMER), 0),
    ];
    let entries: Vec<PriceEntry> = (1..=5).map(|id| entry(id, 1, "10")).collect();
    // Remove the winner one level at a time: the next level takes over.
    for (drop_from, expected) in [(5, 5), (4, 4), (3, 3), (2, 2), (1, 1)] {
        let available: Vec<PriceEntry> = entries
            .iter()
            .filter(|e| e.list_id <= drop_from)
            .cloned()
            .collect();
        assert_eq!(winning_list(&buyer(), &lists, &available), expected);
    }
    // An anonymous viewer only sees channel and base lists.
    assert_eq!(winning_list(&anonymous(), &lists, &entries), 2);
}

#[test]
fn lists_of_others_never_apply() {
    let lists = [
        list(1, PriceScope::Base, 0),
        list(2, PriceScope::Channel(OTHER_CHANNEL), 0),
        list(3, PriceScope::Company(COMPANY + 1), 0),
        list(4, PriceScope::Customer(CUSTOMER + 1), 0),
        list(5, PriceScope::Group(GROUP + 1), 0),
    ];
    let entries: Vec<PriceEntry> = (1..=5).map(|id| entry(id, 1, "10")).collect();
    assert_eq!(winning_list(&buyer(), &lists, &entries), 1);
}

#[test]
fn within_a_level_higher_priority_then_lower_id_wins() {
    let lists = [
        list(7, PriceScope::Channel(CHANNEL), 1),
        list(3, PriceScope::Channel(CHANNEL), 5),
        list(9, PriceScope::Channel(CHANNEL), 5),
    ];
    let entries = [entry(7, 1, "1"), entry(3, 1, "30"), entry(9, 1, "20")];
    assert_eq!(winning_list(&anonymous(), &lists, &entries), 3);
}

#[test]
fn inactive_expired_future_and_foreign_currency_lists_are_skipped() {
    let mut inactive = list(2, PriceScope::Channel(CHANNEL), 0);
    inactive.active = false;
    let mut expired = list(3, PriceScope::Channel(CHANNEL), 0);
    expired.valid_until = Some(now());
    let mut future = list(4, PriceScope::Channel(CHANNEL), 0);
    future.valid_from = Some(now() + Duration::seconds(1));
    let mut euro = list(5, PriceScope::Channel(CHANNEL), 0);
    euro.currency = "EUR".into();
    let mut current = list(6, PriceScope::Base, 0);
    current.valid_from = Some(now());
    current.valid_until = Some(now() + Duration::seconds(1));
    let lists = [inactive, expired, future, euro, current];
    let entries: Vec<PriceEntry> = (2..=6).map(|id| entry(id, 1, "10")).collect();
    assert_eq!(winning_list(&anonymous(), &lists, &entries), 6);
}

#[test]
fn the_highest_tier_not_above_the_quantity_sets_the_list_price() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "10"), entry(1, 12, "9"), entry(1, 48, "8")];
    for (quantity, unit, tier) in [
        (1, "10", 1),
        (11, "10", 1),
        (12, "9", 12),
        (47, "9", 12),
        (48, "8", 48),
        (1000, "8", 48),
    ] {
        let breakdown = price(&anonymous(), quantity, &lists, &entries, &[], &[]).unwrap();
        assert_eq!(breakdown.list_unit_price, d(unit), "quantity {quantity}");
        assert_eq!(breakdown.tier.min_quantity, tier, "quantity {quantity}");
    }
}

#[test]
fn a_specific_list_whose_tiers_start_higher_leaves_small_quantities_to_the_next_level() {
    let lists = [
        list(1, PriceScope::Base, 0),
        list(2, PriceScope::Company(COMPANY), 0),
    ];
    let entries = [entry(1, 1, "10"), entry(2, 25, "7")];
    assert_eq!(winning_list(&buyer(), &lists, &entries), 1);
    let breakdown = price(&buyer(), 25, &lists, &entries, &[], &[]).unwrap();
    assert_eq!(breakdown.tier.list_id, 2);
    assert_eq!(breakdown.unit_price, d("7"));
}

#[test]
fn no_applicable_list_is_an_error_and_quantity_must_be_positive() {
    let lists = [list(1, PriceScope::Company(COMPANY), 0)];
    let entries = [entry(1, 1, "10")];
    assert!(matches!(
        price(&anonymous(), 1, &lists, &entries, &[], &[]),
        Err(PricingError::NoPrice { .. })
    ));
    for quantity in [0, -1] {
        assert_eq!(
            price(&buyer(), quantity, &lists, &entries, &[], &[]),
            Err(PricingError::InvalidQuantity(quantity))
        );
    }
}

#[test]
fn promotions_of_each_kind() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "20")];
    for (discount, unit) in [
        (percent("15"), "17"),
        (amount_off("2.5"), "17.5"),
        (
            Discount::FixedPrice {
                amount: d("12.34"),
                currency: "USD".into(),
            },
            "12.34",
        ),
        // A "fixed price" above the list price is no discount.
        (
            Discount::FixedPrice {
                amount: d("25"),
                currency: "USD".into(),
            },
            "20",
        ),
        // Never below zero.
        (amount_off("50"), "0"),
        (percent("150"), "0"),
    ] {
        let promotions = [promo(1, discount.clone(), false, 0)];
        let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &promotions).unwrap();
        assert_eq!(breakdown.unit_price, d(unit), "{discount:?}");
        assert_eq!(breakdown.list_unit_price, d("20"));
    }
}

#[test]
fn promotion_conditions_scope_target_window_quantity_currency() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "20")];
    let base = promo(1, percent("10"), false, 0);
    let cases: Vec<(&str, PromotionInfo, bool)> = vec![
        ("plain", base.clone(), true),
        (
            "other channel",
            PromotionInfo {
                channel_id: Some(OTHER_CHANNEL),
                ..base.clone()
            },
            false,
        ),
        (
            "this channel",
            PromotionInfo {
                channel_id: Some(CHANNEL),
                ..base.clone()
            },
            true,
        ),
        (
            "group of others",
            PromotionInfo {
                group_id: Some(GROUP),
                ..base.clone()
            },
            false,
        ),
        (
            "other variant",
            PromotionInfo {
                target: PromotionTarget::Variant(101),
                ..base.clone()
            },
            false,
        ),
        (
            "this product",
            PromotionInfo {
                target: PromotionTarget::Product(200),
                ..base.clone()
            },
            true,
        ),
        (
            "parent category",
            PromotionInfo {
                target: PromotionTarget::Category(300),
                ..base.clone()
            },
            true,
        ),
        (
            "other category",
            PromotionInfo {
                target: PromotionTarget::Category(399),
                ..base.clone()
            },
            false,
        ),
        (
            "not started",
            PromotionInfo {
                starts_at: Some(now() + Duration::minutes(1)),
                ..base.clone()
            },
            false,
        ),
        (
            "ended",
            PromotionInfo {
                ends_at: Some(now()),
                ..base.clone()
            },
            false,
        ),
        (
            "inside window",
            PromotionInfo {
                starts_at: Some(now() - Duration::days(1)),
                ends_at: Some(now() + Duration::days(1)),
                ..base.clone()
            },
            true,
        ),
        (
            "needs 2 units",
            PromotionInfo {
                min_quantity: 2,
                ..base.clone()
            },
            false,
        ),
        (
            "inactive",
            PromotionInfo {
                active: false,
                ..base.clone()
            },
            false,
        ),
        (
            "euro amount",
            PromotionInfo {
                discount: Discount::AmountOff {
                    amount: d("1"),
                    currency: "EUR".into(),
                },
                ..base.clone()
            },
            false,
        ),
    ];
    for (name, promotion, applies) in cases {
        let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &[promotion]).unwrap();
        assert_eq!(breakdown.unit_price < d("20"), applies, "{name}");
        assert_eq!(
            breakdown.applied_rules.len(),
            1 + usize::from(applies),
            "{name}"
        );
    }
}

#[test]
fn best_single_non_stackable_or_all_stackables_whichever_is_lower() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "100")];
    // Two non-stackables: the better one, alone.
    let promotions = [
        promo(1, percent("10"), false, 9),
        promo(2, percent("20"), false, 0),
    ];
    let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &promotions).unwrap();
    assert_eq!(breakdown.unit_price, d("80"));
    assert_eq!(breakdown.applied_rules[1].id, 2);
    // Stackables compound in priority order: 10% then 5 off = 85; 5 off then 10% = 85.5.
    let promotions = [
        promo(3, amount_off("5"), true, 1),
        promo(4, percent("10"), true, 2),
    ];
    let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &promotions).unwrap();
    assert_eq!(breakdown.unit_price, d("85"));
    let ids: Vec<i64> = breakdown.applied_rules[1..].iter().map(|r| r.id).collect();
    assert_eq!(ids, [4, 3]);
    assert_eq!(breakdown.applied_rules[1].unit_amount, d("-10"));
    assert_eq!(breakdown.applied_rules[2].unit_amount, d("-5"));
    // Mixed: the stack (85) beats a 12% single (88); a 20% single (80) beats the stack.
    let mixed = |single: &str| {
        let promotions = [
            promo(3, amount_off("5"), true, 1),
            promo(4, percent("10"), true, 2),
            promo(5, percent(single), false, 0),
        ];
        price(&anonymous(), 1, &lists, &entries, &[], &promotions).unwrap()
    };
    assert_eq!(mixed("12").unit_price, d("85"));
    assert_eq!(mixed("12").applied_rules.len(), 3);
    assert_eq!(mixed("20").unit_price, d("80"));
    assert_eq!(mixed("20").applied_rules.len(), 2);
    // A tie between the stack and a single goes to the single (fewer rules).
    assert_eq!(mixed("15").applied_rules.len(), 2);
}

#[test]
fn equal_non_stackables_tie_on_priority_then_id() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "100")];
    let promotions = [
        promo(8, percent("10"), false, 1),
        promo(6, percent("10"), false, 1),
        promo(7, percent("10"), false, 2),
    ];
    let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &promotions).unwrap();
    assert_eq!(breakdown.applied_rules[1].id, 7);
    let promotions = [
        promo(8, percent("10"), false, 1),
        promo(6, percent("10"), false, 1),
    ];
    let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &promotions).unwrap();
    assert_eq!(breakdown.applied_rules[1].id, 6);
}

#[test]
fn four_decimal_unit_prices_and_one_rounding_of_the_line() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "0.1234")];
    let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &[]).unwrap();
    assert_eq!(breakdown.unit_price, d("0.1234"));
    assert_eq!(breakdown.line_total, d("0.12"));
    // 0.1234 × 1000 = 123.4: rounding each unit first would give 120.00.
    let breakdown = price(&anonymous(), 1000, &lists, &entries, &[], &[]).unwrap();
    assert_eq!(breakdown.line_total, d("123.40"));
    // Half away from zero: 0.125 → 0.13.
    let entries = [entry(1, 1, "0.125")];
    let breakdown = price(&anonymous(), 1, &lists, &entries, &[], &[]).unwrap();
    assert_eq!(breakdown.line_total, d("0.13"));
    // A percent off keeps the exact unit price; only the line is rounded.
    let entries = [entry(1, 1, "19.99")];
    let promotions = [promo(1, percent("15"), false, 0)];
    let breakdown = price(&anonymous(), 3, &lists, &entries, &[], &promotions).unwrap();
    assert_eq!(breakdown.unit_price, d("16.9915"));
    assert_eq!(breakdown.line_total, d("50.97"));
    assert_eq!(breakdown.list_line_total, d("59.97"));
    assert_eq!(breakdown.discount_total(), d("9.00"));
}

#[test]
fn minor_units_follow_the_currency() {
    assert_eq!(round_to_minor_unit(d("1234.5"), "JPY"), d("1235"));
    assert_eq!(round_to_minor_unit(d("1.2345"), "KWD"), d("1.235"));
    assert_eq!(round_to_minor_unit(d("1.005"), "USD"), d("1.01"));
    assert_eq!(round_to_minor_unit(d("-1.005"), "USD"), d("-1.01"));
}

fn paper_rule() -> QuantityRule {
    QuantityRule {
        id: 1,
        list_id: 1,
        min_quantity: 10,
        max_quantity: Some(500),
        increment: 5,
    }
}

#[test]
fn quantity_rules_refuse_with_the_nearest_valid_quantities() {
    let lists = [list(1, PriceScope::Base, 0)];
    let entries = [entry(1, 1, "5")];
    let rules = [paper_rule()];
    for (quantity, below, above) in [
        (1, None, Some(10)),
        (9, None, Some(10)),
        (12, Some(10), Some(15)),
        (14, Some(10), Some(15)),
        (501, Some(500), None),
        (1000, Some(500), None),
    ] {
        match price(&anonymous(), quantity, &lists, &entries, &rules, &[]) {
            Err(PricingError::QuantityRule {
                nearest_below,
                nearest_above,
                ..
            }) => assert_eq!((nearest_below, nearest_above), (below, above), "{quantity}"),
            other => panic!("{quantity}: {other:?}"),
        }
    }
    for quantity in [10, 15, 495, 500] {
        assert!(price(&anonymous(), quantity, &lists, &entries, &rules, &[]).is_ok());
    }
    // A max that is not on the grid: the last valid quantity is below it.
    let odd = QuantityRule {
        max_quantity: Some(23),
        ..paper_rule()
    };
    assert_eq!(odd.nearest(30), (Some(20), None));
    assert_eq!(odd.nearest(21), (Some(20), None));
    // A rule of a list that did not win does not apply.
    let other = QuantityRule {
        list_id: 2,
        ..paper_rule()
    };
    assert!(price(&anonymous(), 1, &lists, &entries, &[other], &[]).is_ok());
}

#[test]
fn extreme_quantity_rules_never_overflow() {
    // An increment of i32::MAX once made `nearest` overflow (a panic, an HTTP 500 for any
    // shopper who asked for a quantity off the grid).
    let huge = QuantityRule {
        id: 1,
        list_id: 1,
        min_quantity: 1,
        max_quantity: None,
        increment: i32::MAX,
    };
    assert!(!huge.allows(2));
    assert_eq!(huge.nearest(2), (Some(1), None));
    assert_eq!(huge.nearest(i32::MAX), (Some(1), None));
    assert!(huge.allows(1));
    let top = QuantityRule {
        min_quantity: i32::MAX,
        max_quantity: Some(i32::MAX),
        ..huge.clone()
    };
    assert_eq!(top.nearest(1), (None, Some(i32::MAX)));
    assert!(top.allows(i32::MAX));
    let odd = QuantityRule {
        min_quantity: i32::MIN,
        max_quantity: Some(i32::MIN),
        increment: i32::MIN,
        ..huge
    };
    assert!(!odd.allows(i32::MAX));
    assert_eq!(odd.nearest(i32::MAX), (None, None));
    assert_eq!(odd.nearest(i32::MIN), (None, None));
}

#[test]
fn tiers_show_the_breaks_this_viewer_gets() {
    let lists = [
        list(1, PriceScope::Base, 0),
        list(2, PriceScope::Channel(CHANNEL), 0),
        list(3, PriceScope::Company(COMPANY), 0),
    ];
    let entries = [
        entry(1, 1, "10"),
        entry(2, 1, "9"),
        entry(2, 12, "8"),
        entry(3, 1, "7.5"),
        entry(3, 25, "7"),
    ];
    let candidates = PriceCandidates {
        lists: &lists,
        entries: &entries,
        rules: &[],
        promotions: &[],
    };
    let tiers = |viewer: &PriceViewer| -> Vec<(i32, Decimal, i64)> {
        price_tiers(viewer, now(), &candidates)
            .into_iter()
            .map(|t| (t.min_quantity, t.unit_price, t.list_id))
            .collect()
    };
    assert_eq!(
        tiers(&anonymous()),
        [(1, d("9"), 2), (12, d("8"), 2)],
        "the base list is hidden by the channel's"
    );
    assert_eq!(tiers(&buyer()), [(1, d("7.5"), 3), (25, d("7"), 3)]);
}

// ---- properties ----

fn arb_scope() -> impl Strategy<Value = PriceScope> {
    prop_oneof![
        Just(PriceScope::Base),
        prop_oneof![Just(CHANNEL), Just(OTHER_CHANNEL)].prop_map(PriceScope::Channel),
        prop_oneof![Just(GROUP), Just(GROUP + 1)].prop_map(PriceScope::Group),
        prop_oneof![Just(COMPANY), Just(COMPANY + 1)].prop_map(PriceScope::Company),
        prop_oneof![Just(CUSTOMER), Just(CUSTOMER + 1)].prop_map(PriceScope::Customer),
    ]
}

/// An amount with up to 4 decimals, 0 to 10,000.
fn arb_amount() -> impl Strategy<Value = Decimal> {
    (0i64..=100_000_000).prop_map(|units| Decimal::new(units, 4))
}

fn arb_discount() -> impl Strategy<Value = Discount> {
    prop_oneof![
        (0i64..=10_000).prop_map(|p| Discount::PercentOff(Decimal::new(p, 2))),
        arb_amount().prop_map(|amount| Discount::AmountOff {
            amount,
            currency: "USD".into()
        }),
        arb_amount().prop_map(|amount| Discount::FixedPrice {
            amount,
            currency: "USD".into()
        }),
    ]
}

prop_compose! {
    fn arb_candidates()(
        scopes in prop::collection::vec((arb_scope(), -2i32..3), 1..6),
        entries in prop::collection::vec((0usize..6, 1i32..60, arb_amount()), 1..20),
        promotions in prop::collection::vec((arb_discount(), any::<bool>(), -2i32..3, 1i32..5), 0..5),
    ) -> (Vec<PriceListInfo>, Vec<PriceEntry>, Vec<PromotionInfo>) {
        let lists: Vec<PriceListInfo> = scopes
            .iter()
            .enumerate()
            .map(|(i, (scope, priority))| list(i as i64 + 1, *scope, *priority))
            .collect();
        let entries = entries
            .into_iter()
            .map(|(l, min_quantity, amount)| PriceEntry {
                list_id: (l % lists.len()) as i64 + 1,
                min_quantity,
                amount,
            })
            .collect();
        let promotions = promotions
            .into_iter()
            .enumerate()
            .map(|(i, (discount, stackable, priority, min_quantity))| PromotionInfo {
                min_quantity,
                ..promo(i as i64 + 1, discount, stackable, priority)
            })
            .collect();
        (lists, entries, promotions)
    }
}

proptest! {
    #[test]
    fn a_price_is_never_negative_and_rounds_once(
        (lists, entries, promotions) in arb_candidates(),
        quantity in 1i32..200,
        signed_in in any::<bool>(),
    ) {
        let viewer = if signed_in { buyer() } else { anonymous() };
        if let Ok(b) = price(&viewer, quantity, &lists, &entries, &[], &promotions) {
            prop_assert!(b.unit_price >= Decimal::ZERO);
            prop_assert!(b.unit_price <= b.list_unit_price);
            prop_assert!(b.line_total >= Decimal::ZERO);
            // Exactly one rounding: of the exact unit price times the quantity.
            prop_assert_eq!(
                b.line_total,
                round_to_minor_unit(b.unit_price * Decimal::from(quantity), "USD")
            );
            prop_assert!(b.line_total.scale() <= 2);
        }
    }

    #[test]
    fn an_applicable_more_specific_list_always_wins(
        (lists, entries, _) in arb_candidates(),
        quantity in 1i32..200,
    ) {
        let viewer = buyer();
        if let Ok(b) = price(&viewer, quantity, &lists, &entries, &[], &[]) {
            let best_level = entries
                .iter()
                .filter(|e| e.min_quantity <= quantity)
                .filter_map(|e| lists.iter().find(|l| l.id == e.list_id))
                .filter(|l| viewer.sees(l.scope))
                .map(|l| l.scope.level())
                .max()
                .unwrap();
            prop_assert_eq!(b.tier.scope.level(), best_level);
        }
    }

    #[test]
    fn within_one_list_more_units_never_cost_more_per_unit(
        amounts in prop::collection::vec((1i32..100, arb_amount()), 1..8),
        quantity in 1i32..150,
        more in 0i32..150,
    ) {
        // Tiers as merchants write them: the larger the tier, the lower its price.
        let mut amounts = amounts;
        amounts.sort_by_key(|(min, _)| *min);
        amounts.dedup_by_key(|(min, _)| *min);
        let mut sorted: Vec<Decimal> = amounts.iter().map(|(_, a)| *a).collect();
        sorted.sort_by(|a, b| b.cmp(a));
        let mut entries: Vec<PriceEntry> = amounts
            .iter()
            .zip(sorted)
            .map(|((min, _), amount)| PriceEntry { list_id: 1, min_quantity: *min, amount })
            .collect();
        entries[0].min_quantity = 1;
        let lists = [list(1, PriceScope::Base, 0)];
        let small = price(&anonymous(), quantity, &lists, &entries, &[], &[]).unwrap();
        let large = price(&anonymous(), quantity + more, &lists, &entries, &[], &[]).unwrap();
        prop_assert!(large.unit_price <= small.unit_price);
    }

    #[test]
    fn the_order_of_the_candidates_does_not_matter(
        (lists, entries, promotions) in arb_candidates(),
        quantity in 1i32..200,
        seed in any::<u64>(),
    ) {
        let viewer = buyer();
        let forward = price(&viewer, quantity, &lists, &entries, &[], &promotions);
        let shuffle = |n: usize| {
            let mut order: Vec<usize> = (0..n).collect();
            let mut state = seed;
            for i in (1..n).rev() {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (state >> 33) as usize % (i + 1));
            }
            order
        };
        let lists2: Vec<_> = shuffle(lists.len()).into_iter().map(|i| lists[i].clone()).collect();
        let entries2: Vec<_> = shuffle(entries.len()).into_iter().map(|i| entries[i].clone()).collect();
        let promotions2: Vec<_> = shuffle(promotions.len()).into_iter().map(|i| promotions[i].clone()).collect();
        let shuffled = price(&viewer, quantity, &lists2, &entries2, &[], &promotions2);
        prop_assert_eq!(forward, shuffled);
    }

    #[test]
    fn quantity_rules_never_panic_and_suggest_only_allowed_quantities(
        min_quantity in any::<i32>(),
        max_quantity in any::<Option<i32>>(),
        increment in any::<i32>(),
        quantity in any::<i32>(),
    ) {
        let rule = QuantityRule { id: 1, list_id: 1, min_quantity, max_quantity, increment };
        let allowed = rule.allows(quantity);
        let (below, above) = rule.nearest(quantity);
        if let Some(below) = below {
            prop_assert!(below < quantity, "{below} is not below {quantity}");
            prop_assert!(rule.allows(below), "{rule:?} refuses its own suggestion {below}");
        }
        if let Some(above) = above {
            prop_assert!(above > quantity, "{above} is not above {quantity}");
            prop_assert!(rule.allows(above), "{rule:?} refuses its own suggestion {above}");
        }
        if allowed {
            prop_assert!(quantity >= 1 && quantity >= min_quantity);
        }
    }

    #[test]
    fn the_nearest_quantities_are_the_closest_allowed_ones(
        min_quantity in -5i32..60,
        max_quantity in prop::option::of(-5i32..300),
        increment in -3i32..40,
        quantity in -5i32..400,
    ) {
        let rule = QuantityRule { id: 1, list_id: 1, min_quantity, max_quantity, increment };
        // Every allowed quantity lies below 400 + 40 when there is no max.
        let allowed: Vec<i32> = (-10..500).filter(|&q| rule.allows(q)).collect();
        let below = allowed.iter().copied().filter(|&q| q < quantity).max();
        let above = allowed.iter().copied().find(|&q| q > quantity);
        prop_assert_eq!(rule.nearest(quantity), (below, above));
    }
}
