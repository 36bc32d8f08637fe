//! The demo data set: deterministic (fixed seed), realistic, loaded in one transaction.
//!
//! The same seed always yields the same catalog, SKUs, stock and prices, so documentation,
//! tests and benchmarks can name them. Only timestamps (and the time-limited promotion's
//! window, which is placed around the load time so it is live in a fresh demo) vary.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use rust_decimal::Decimal;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, DatabaseConnection, DatabaseTransaction, EntityTrait,
    PaginatorTrait, QuerySelect, TransactionTrait,
};
use serde_json::json;

use crate::CoreError;
use crate::entities::{
    category, channel, channel_location, channel_product, company, customer, customer_group,
    inventory_movement, price_list, price_list_entry, product, promotion, quantity_rule,
    stock_level, stock_location, variant,
};
use crate::money::{StoredAmount, to_stored};

/// The fixed seed of the demo data.
pub const DEMO_SEED: u64 = 0x5EED_C0FF_EE00_2026;
/// Products in the demo catalog.
pub const DEMO_PRODUCTS: usize = 520;
/// Rows per multi-row INSERT: well under SQLite's and PostgreSQL's bind-parameter limits.
const BATCH: usize = 400;

/// What a demo load inserted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DemoSummary {
    pub categories: usize,
    pub products: usize,
    pub variants: usize,
    pub stock_levels: usize,
    pub price_entries: usize,
    pub quantity_rules: usize,
}

/// A tiny deterministic generator (SplitMix64): the demo needs repeatability, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// How a leaf category's products vary.
#[derive(Clone, Copy)]
enum Options {
    Sizes(&'static [&'static str]),
    Colours,
    Packs,
}

struct Leaf {
    slug: &'static str,
    name: &'static str,
    code: &'static str,
    nouns: &'static [&'static str],
    materials: &'static [&'static str],
    options: Options,
    /// Price range in whole currency units.
    price: (i64, i64),
}

const APPAREL_SIZES: &[&str] = &["S", "M", "L", "XL"];
const SHOE_SIZES: &[&str] = &["39", "40", "41", "42", "43", "44", "45"];
const GEAR_SIZES: &[&str] = &["S", "M", "L"];
const COLOURS: &[&str] = &["Black", "White", "Navy", "Red", "Olive", "Grey", "Sand"];
const PACKS: &[&str] = &["Single", "Pack of 10", "Case of 50"];
const ADJECTIVES: &[&str] = &[
    "Classic",
    "Essential",
    "Urban",
    "Alpine",
    "Coastal",
    "Heritage",
    "Everyday",
    "Premium",
    "Lightweight",
    "Rugged",
    "Modern",
    "Vintage",
    "Studio",
    "Trail",
    "Harbor",
    "Summit",
];
const BRANDS: &[&str] = &[
    "Northwind",
    "Fabrikam",
    "Contoso",
    "Tailspin",
    "Woodgrove",
    "Litware",
];
const ORIGINS: &[&str] = &["USA", "Portugal", "Vietnam", "Mexico", "Germany", "Japan"];

/// The category tree: top-level categories with their leaves.
const TREE: &[(&str, &str, &[Leaf])] = &[
    (
        "apparel",
        "Apparel",
        &[
            Leaf {
                slug: "t-shirts",
                name: "T-Shirts",
                code: "TS",
                nouns: &["Tee", "Crew Tee", "V-Neck Tee", "Pocket Tee"],
                materials: &["cotton", "organic cotton", "linen"],
                options: Options::Sizes(APPAREL_SIZES),
                price: (15, 35),
            },
            Leaf {
                slug: "hoodies",
                name: "Hoodies",
                code: "HD",
                nouns: &["Hoodie", "Zip Hoodie", "Pullover"],
                materials: &["cotton", "fleece"],
                options: Options::Sizes(APPAREL_SIZES),
                price: (40, 85),
            },
            Leaf {
                slug: "jackets",
                name: "Jackets",
                code: "JK",
                nouns: &["Jacket", "Parka", "Windbreaker", "Down Vest"],
                materials: &["nylon", "wool", "down"],
                options: Options::Sizes(APPAREL_SIZES),
                price: (90, 260),
            },
            Leaf {
                slug: "jeans",
                name: "Jeans",
                code: "JN",
                nouns: &["Jeans", "Slim Jeans", "Chinos"],
                materials: &["denim", "cotton twill"],
                options: Options::Sizes(APPAREL_SIZES),
                price: (50, 120),
            },
        ],
    ),
    (
        "footwear",
        "Footwear",
        &[
            Leaf {
                slug: "sneakers",
                name: "Sneakers",
                code: "SN",
                nouns: &["Sneaker", "Runner", "Court Shoe"],
                materials: &["leather", "mesh", "canvas"],
                options: Options::Sizes(SHOE_SIZES),
                price: (60, 160),
            },
            Leaf {
                slug: "boots",
                name: "Boots",
                code: "BT",
                nouns: &["Boot", "Chelsea Boot", "Hiking Boot"],
                materials: &["leather", "suede"],
                options: Options::Sizes(SHOE_SIZES),
                price: (90, 220),
            },
        ],
    ),
    (
        "home",
        "Home",
        &[
            Leaf {
                slug: "kitchen",
                name: "Kitchen",
                code: "KT",
                nouns: &["Mug", "Skillet", "Knife Set", "Kettle"],
                materials: &["ceramic", "cast iron", "steel"],
                options: Options::Colours,
                price: (10, 90),
            },
            Leaf {
                slug: "bedding",
                name: "Bedding",
                code: "BD",
                nouns: &["Duvet Cover", "Sheet Set", "Pillow"],
                materials: &["percale", "linen", "sateen"],
                options: Options::Colours,
                price: (30, 200),
            },
            Leaf {
                slug: "lighting",
                name: "Lighting",
                code: "LT",
                nouns: &["Desk Lamp", "Pendant", "Floor Lamp"],
                materials: &["brass", "aluminium", "oak"],
                options: Options::Colours,
                price: (25, 180),
            },
        ],
    ),
    (
        "outdoor",
        "Outdoor",
        &[
            Leaf {
                slug: "camping",
                name: "Camping",
                code: "CP",
                nouns: &["Tent", "Sleeping Bag", "Backpack"],
                materials: &["ripstop nylon", "polyester"],
                options: Options::Sizes(GEAR_SIZES),
                price: (20, 400),
            },
            Leaf {
                slug: "cycling",
                name: "Cycling",
                code: "CY",
                nouns: &["Helmet", "Jersey", "Gloves"],
                materials: &["polycarbonate", "lycra"],
                options: Options::Sizes(GEAR_SIZES),
                price: (15, 300),
            },
        ],
    ),
    (
        "office",
        "Office Supplies",
        &[
            Leaf {
                slug: "paper",
                name: "Paper",
                code: "PP",
                nouns: &["Copy Paper", "Notebook", "Sticky Notes"],
                materials: &["recycled paper", "paper"],
                options: Options::Packs,
                price: (5, 40),
            },
            Leaf {
                slug: "ink",
                name: "Ink & Toner",
                code: "IK",
                nouns: &["Toner", "Ink Cartridge", "Marker Set"],
                materials: &["plastic"],
                options: Options::Packs,
                price: (15, 80),
            },
        ],
    ),
];

struct LocationSpec {
    code: &'static str,
    name: &'static str,
    kind: &'static str,
    region: &'static str,
    lat: f64,
    lon: f64,
    handling_hours: i32,
    cutoff: &'static str,
    time_zone: &'static str,
}

const LOCATIONS: &[LocationSpec] = &[
    LocationSpec {
        code: "WH-EAST",
        name: "East Coast Warehouse",
        kind: "warehouse",
        region: "us-east",
        lat: 40.7357,
        lon: -74.1724,
        handling_hours: 24,
        cutoff: "15:00",
        time_zone: "America/New_York",
    },
    LocationSpec {
        code: "WH-WEST",
        name: "West Coast Warehouse",
        kind: "warehouse",
        region: "us-west",
        lat: 34.0522,
        lon: -118.2437,
        handling_hours: 24,
        cutoff: "14:00",
        time_zone: "America/Los_Angeles",
    },
    LocationSpec {
        code: "WH-CENTRAL",
        name: "Central Warehouse",
        kind: "warehouse",
        region: "us-central",
        lat: 39.0997,
        lon: -94.5786,
        handling_hours: 48,
        cutoff: "12:00",
        time_zone: "America/Chicago",
    },
    LocationSpec {
        code: "STORE-DOWNTOWN",
        name: "Downtown Store",
        kind: "store",
        region: "us-east",
        lat: 40.7128,
        lon: -74.0060,
        handling_hours: 2,
        cutoff: "18:00",
        time_zone: "America/New_York",
    },
    LocationSpec {
        code: "STORE-MALL",
        name: "Riverside Mall Store",
        kind: "store",
        region: "us-east",
        lat: 40.7831,
        lon: -73.9712,
        handling_hours: 4,
        cutoff: "17:00",
        time_zone: "America/New_York",
    },
];

struct ChannelSpec {
    code: &'static str,
    name: &'static str,
    currency: &'static str,
    safety_stock: i32,
    low_stock_threshold: i32,
    /// Locations feeding the channel, highest priority first.
    locations: &'static [&'static str],
}

const CHANNELS: &[ChannelSpec] = &[
    ChannelSpec {
        code: "web",
        name: "Web storefront",
        currency: "USD",
        safety_stock: 2,
        low_stock_threshold: 5,
        locations: &["WH-EAST", "WH-WEST", "WH-CENTRAL"],
    },
    ChannelSpec {
        code: "mobile",
        name: "Mobile app",
        currency: "USD",
        safety_stock: 2,
        low_stock_threshold: 5,
        locations: &["WH-EAST", "WH-WEST", "WH-CENTRAL"],
    },
    ChannelSpec {
        code: "pos",
        name: "In-store POS",
        currency: "USD",
        safety_stock: 0,
        low_stock_threshold: 3,
        locations: &["STORE-DOWNTOWN", "STORE-MALL"],
    },
    ChannelSpec {
        code: "b2b",
        name: "B2B buyer portal",
        currency: "USD",
        safety_stock: 0,
        low_stock_threshold: 20,
        locations: &["WH-CENTRAL", "WH-EAST", "WH-WEST"],
    },
];

/// (code, name) of the B2B companies; buyer e-mails are `buyer@<code>.example`.
const COMPANIES: &[(&str, &str)] = &[
    ("acme", "ACME Corporation"),
    ("globex", "Globex Corporation"),
    ("initech", "Initech"),
];

/// Loads the demo data when the database holds no channel yet. Returns what it loaded, or
/// `None` when data was already there (also when another gateway instance loaded it first).
pub async fn seed_if_empty(db: &DatabaseConnection) -> Result<Option<DemoSummary>, CoreError> {
    if channel::Entity::find().count(db).await? > 0 {
        return Ok(None);
    }
    let txn = db.begin().await?;
    match seed(&txn).await {
        Ok(summary) => {
            txn.commit().await?;
            Ok(Some(summary))
        }
        Err(err) => {
            txn.rollback().await?;
            // A concurrent start-up of another instance wins the race on the unique codes.
            if channel::Entity::find().count(db).await? > 0 {
                tracing::info!("demo data was loaded concurrently by another instance");
                return Ok(None);
            }
            Err(err)
        }
    }
}

async fn insert_batched<A>(txn: &DatabaseTransaction, rows: Vec<A>) -> Result<(), CoreError>
where
    A: ActiveModelTrait + Send,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(BATCH).collect();
        A::Entity::insert_many(chunk)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

fn price(rng: &mut Rng, (low, high): (i64, i64)) -> Decimal {
    let cents = *rng.pick(&[99_i64, 50, 0, 95]);
    Decimal::new(rng.range(low, high) * 100 + cents, 2)
}

/// A demo amount as a money column value (every demo amount is storable; this only turns a
/// mistake in the data below into an error instead of a panic).
fn stored(amount: Decimal) -> Result<StoredAmount, CoreError> {
    to_stored(amount).map_err(|err| CoreError::invalid("demo amount", err.to_string()))
}

fn slugify(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

struct SeedProduct {
    slug: String,
    top: &'static str,
    leaf: &'static Leaf,
    base_price: Decimal,
    variants: Vec<(String, String, serde_json::Value)>,
}

async fn seed(txn: &DatabaseTransaction) -> Result<DemoSummary, CoreError> {
    let mut rng = Rng(DEMO_SEED);
    let mut summary = DemoSummary::default();
    let now = Utc::now();

    // ---- categories ----
    let mut category_ids: HashMap<&str, i64> = HashMap::new();
    for (position, (slug, name, leaves)) in TREE.iter().enumerate() {
        let parent = category::ActiveModel {
            slug: Set((*slug).to_owned()),
            name: Set((*name).to_owned()),
            position: Set(position as i32),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        category_ids.insert(slug, parent.id);
        for (position, leaf) in leaves.iter().enumerate() {
            let child = category::ActiveModel {
                parent_id: Set(Some(parent.id)),
                slug: Set(leaf.slug.to_owned()),
                name: Set(leaf.name.to_owned()),
                position: Set(position as i32),
                ..Default::default()
            }
            .insert(txn)
            .await?;
            category_ids.insert(leaf.slug, child.id);
        }
        summary.categories += 1 + leaves.len();
    }

    // ---- products and variants ----
    let leaves: Vec<(&'static str, &'static Leaf)> = TREE
        .iter()
        .flat_map(|(top, _, leaves)| leaves.iter().map(move |leaf| (*top, leaf)))
        .collect();
    let mut seeds = Vec::with_capacity(DEMO_PRODUCTS);
    let mut product_rows = Vec::with_capacity(DEMO_PRODUCTS);
    for index in 0..DEMO_PRODUCTS {
        let (top, leaf) = leaves[index % leaves.len()];
        let name = format!("{} {}", rng.pick(ADJECTIVES), rng.pick(leaf.nouns));
        let slug = format!("{}-{}", slugify(&name), index + 1);
        let material = *rng.pick(leaf.materials);
        let brand = *rng.pick(BRANDS);
        let attributes = json!({
            "brand": brand,
            "material": material,
            "origin": rng.pick(ORIGINS),
            "eco": if material.contains("organic") || material.contains("recycled") { "yes" } else { "no" },
        });
        let status = if index % 97 == 96 { "draft" } else { "active" };
        product_rows.push(product::ActiveModel {
            slug: Set(slug.clone()),
            name: Set(format!("{brand} {name}")),
            description: Set(format!(
                "The {brand} {name} in {material}. Part of our {} range.",
                leaf.name.to_lowercase()
            )),
            category_id: Set(category_ids[leaf.slug]),
            attributes: Set(attributes),
            status: Set(status.to_owned()),
            ..Default::default()
        });
        let code = format!("{}-{:04}", leaf.code, index + 1);
        let variants = match leaf.options {
            Options::Sizes(sizes) => {
                let colour = *rng.pick(COLOURS);
                let count = if sizes.len() > 4 {
                    3 + rng.below(3) as usize
                } else {
                    sizes.len()
                };
                let start = rng.below((sizes.len() - count + 1) as u64) as usize;
                sizes[start..start + count]
                    .iter()
                    .map(|size| {
                        (
                            format!("{code}-{size}"),
                            format!("{size} / {colour}"),
                            json!({ "size": size, "colour": colour }),
                        )
                    })
                    .collect()
            }
            Options::Colours => {
                let count = 2 + rng.below(2) as usize;
                let start = rng.below((COLOURS.len() - count + 1) as u64) as usize;
                COLOURS[start..start + count]
                    .iter()
                    .map(|colour| {
                        (
                            format!("{code}-{}", colour.to_uppercase()),
                            (*colour).to_owned(),
                            json!({ "colour": colour }),
                        )
                    })
                    .collect()
            }
            Options::Packs => {
                let count = 2 + rng.below(2) as usize;
                PACKS[..count]
                    .iter()
                    .enumerate()
                    .map(|(i, pack)| {
                        (
                            format!("{code}-P{}", i + 1),
                            (*pack).to_owned(),
                            json!({ "pack": pack }),
                        )
                    })
                    .collect()
            }
        };
        seeds.push(SeedProduct {
            slug,
            top,
            leaf,
            base_price: price(&mut rng, leaf.price),
            variants,
        });
    }
    insert_batched(txn, product_rows).await?;
    let product_ids: HashMap<String, i64> = product::Entity::find()
        .select_only()
        .column(product::Column::Slug)
        .column(product::Column::Id)
        .into_tuple::<(String, i64)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let mut variant_rows = Vec::new();
    for seed in &seeds {
        for (position, (sku, name, options)) in seed.variants.iter().enumerate() {
            variant_rows.push(variant::ActiveModel {
                product_id: Set(product_ids[&seed.slug]),
                sku: Set(sku.clone()),
                name: Set(name.clone()),
                option_values: Set(options.clone()),
                weight_grams: Set(rng.range(80, 4000) as i32),
                position: Set(position as i32),
                ..Default::default()
            });
        }
    }
    summary.products = seeds.len();
    summary.variants = variant_rows.len();
    insert_batched(txn, variant_rows).await?;
    let variant_ids: HashMap<String, i64> = variant::Entity::find()
        .select_only()
        .column(variant::Column::Sku)
        .column(variant::Column::Id)
        .into_tuple::<(String, i64)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();

    // ---- locations and channels ----
    let mut location_ids: HashMap<&str, i64> = HashMap::new();
    for spec in LOCATIONS {
        let location = stock_location::ActiveModel {
            code: Set(spec.code.to_owned()),
            name: Set(spec.name.to_owned()),
            kind: Set(spec.kind.to_owned()),
            region: Set(spec.region.to_owned()),
            latitude: Set(spec.lat),
            longitude: Set(spec.lon),
            handling_hours: Set(spec.handling_hours),
            cutoff_time: Set(spec.cutoff.to_owned()),
            time_zone: Set(spec.time_zone.to_owned()),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        location_ids.insert(spec.code, location.id);
    }
    let mut channel_ids: HashMap<&str, i64> = HashMap::new();
    let mut links = Vec::new();
    for spec in CHANNELS {
        let channel = channel::ActiveModel {
            code: Set(spec.code.to_owned()),
            name: Set(spec.name.to_owned()),
            currency: Set(spec.currency.to_owned()),
            safety_stock: Set(spec.safety_stock),
            low_stock_threshold: Set(spec.low_stock_threshold),
            routing_policy: Set("fewest_shipments".to_owned()),
            // POS reservations are hard holds (a customer at the till); carts expire.
            reservation_ttl_seconds: Set(if spec.code == "pos" { 0 } else { 900 }),
            // Routing: POS sells from the clerk's store, in one go; B2B may backorder.
            eligible_location_kinds: Set(if spec.code == "pos" {
                "store"
            } else {
                "warehouse,store"
            }
            .to_owned()),
            service_levels: Set(if spec.code == "pos" {
                "standard"
            } else {
                "standard,express,same_day"
            }
            .to_owned()),
            max_shipments: Set(if spec.code == "pos" { 1 } else { 3 }),
            backorders: Set(spec.code == "b2b"),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        channel_ids.insert(spec.code, channel.id);
        for (priority, location) in spec.locations.iter().enumerate() {
            links.push(channel_location::ActiveModel {
                channel_id: Set(channel.id),
                location_id: Set(location_ids[location]),
                priority: Set(priority as i32 + 1),
                ..Default::default()
            });
        }
    }
    insert_batched(txn, links).await?;

    // Which channels list which products: the web lists everything but wholesale-only office
    // supplies; the app a curated subset; stores the goods they stock; B2B office supplies and
    // a third of the rest.
    let mut listings = Vec::new();
    for (index, seed) in seeds.iter().enumerate() {
        let wholesale_only = seed.top == "office";
        let in_store = matches!(seed.top, "apparel" | "footwear" | "home");
        let listed = [
            ("web", !wholesale_only),
            ("mobile", !wholesale_only && index % 10 != 3),
            ("pos", in_store),
            ("b2b", wholesale_only || index % 3 == 0),
        ];
        for (channel, yes) in listed {
            if yes {
                listings.push(channel_product::ActiveModel {
                    channel_id: Set(channel_ids[channel]),
                    product_id: Set(product_ids[&seed.slug]),
                    ..Default::default()
                });
            }
        }
    }
    insert_batched(txn, listings).await?;

    // ---- stock: every variant in every warehouse, store goods in stores too ----
    let mut levels = Vec::new();
    let mut movements = Vec::new();
    for seed in &seeds {
        let in_store = matches!(seed.top, "apparel" | "footwear" | "home");
        for (sku, _, _) in &seed.variants {
            let profile = rng.below(100);
            for spec in LOCATIONS {
                if spec.kind == "store" && !in_store {
                    continue;
                }
                let on_hand = match (profile, spec.kind) {
                    (0..7, _) => 0, // out of stock
                    (7..17, "warehouse") if spec.code == "WH-EAST" => rng.range(1, 3),
                    (7..17, _) => 0, // low stock
                    (_, "warehouse") => rng.range(5, 150),
                    _ => rng.range(0, 20),
                } as i32;
                levels.push(stock_level::ActiveModel {
                    variant_id: Set(variant_ids[sku]),
                    location_id: Set(location_ids[spec.code]),
                    on_hand: Set(on_hand),
                    reserved: Set(0),
                    ..Default::default()
                });
                if on_hand > 0 {
                    movements.push(inventory_movement::ActiveModel {
                        variant_id: Set(variant_ids[sku]),
                        location_id: Set(location_ids[spec.code]),
                        kind: Set("receive".to_owned()),
                        on_hand_delta: Set(on_hand),
                        reserved_delta: Set(0),
                        actor: Set("demo-seed".to_owned()),
                        reason: Set("initial stock".to_owned()),
                        reference: Set(None),
                        ..Default::default()
                    });
                }
            }
        }
    }
    summary.stock_levels = levels.len();
    insert_batched(txn, levels).await?;
    insert_batched(txn, movements).await?;

    // ---- customers ----
    let mut group_ids: HashMap<&str, i64> = HashMap::new();
    for (code, name) in [("wholesale", "Wholesale"), ("vip", "VIP")] {
        let group = customer_group::ActiveModel {
            code: Set(code.to_owned()),
            name: Set(name.to_owned()),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        group_ids.insert(code, group.id);
    }
    let mut company_ids: HashMap<&str, i64> = HashMap::new();
    for (code, name) in COMPANIES {
        let company = company::ActiveModel {
            code: Set((*code).to_owned()),
            name: Set((*name).to_owned()),
            ..Default::default()
        }
        .insert(txn)
        .await?;
        company_ids.insert(code, company.id);
    }
    let mut customers = vec![
        customer::ActiveModel {
            email: Set("shopper@example.com".to_owned()),
            name: Set("Sam Shopper".to_owned()),
            ..Default::default()
        },
        customer::ActiveModel {
            email: Set("vip@example.com".to_owned()),
            name: Set("Vera Important".to_owned()),
            group_id: Set(Some(group_ids["vip"])),
            ..Default::default()
        },
    ];
    for (code, name) in COMPANIES {
        customers.push(customer::ActiveModel {
            email: Set(format!("buyer@{code}.example")),
            name: Set(format!("{name} Buyer")),
            company_id: Set(Some(company_ids[code])),
            group_id: Set(Some(group_ids["wholesale"])),
            ..Default::default()
        });
    }
    // Explicit NotSet/Set mixes differ per row; insert one by one (five rows).
    for row in customers {
        row.insert(txn).await?;
    }

    // ---- prices ----
    let list = |code: &str, name: &str, priority: i32| price_list::ActiveModel {
        code: Set(code.to_owned()),
        name: Set(name.to_owned()),
        currency: Set("USD".to_owned()),
        priority: Set(priority),
        active: Set(true),
        ..Default::default()
    };
    let base = list("base-usd", "Base prices (USD)", 0).insert(txn).await?;
    let mobile = price_list::ActiveModel {
        channel_id: Set(Some(channel_ids["mobile"])),
        ..list("mobile-usd", "Mobile app prices", 0)
    }
    .insert(txn)
    .await?;
    let b2b = price_list::ActiveModel {
        channel_id: Set(Some(channel_ids["b2b"])),
        ..list("b2b-usd", "B2B list prices with volume tiers", 0)
    }
    .insert(txn)
    .await?;
    let wholesale = price_list::ActiveModel {
        customer_group_id: Set(Some(group_ids["wholesale"])),
        ..list("wholesale-usd", "Wholesale group prices", 0)
    }
    .insert(txn)
    .await?;
    let mut contracts = Vec::new();
    for (code, name) in COMPANIES {
        let contract = price_list::ActiveModel {
            company_id: Set(Some(company_ids[code])),
            ..list(&format!("contract-{code}"), &format!("{name} contract"), 10)
        }
        .insert(txn)
        .await?;
        contracts.push(contract.id);
    }
    let entry = |list_id: i64, variant_id: i64, min_quantity: i32, amount: Decimal| {
        Ok::<_, CoreError>(price_list_entry::ActiveModel {
            price_list_id: Set(list_id),
            variant_id: Set(variant_id),
            min_quantity: Set(min_quantity),
            amount: Set(stored(amount)?),
            ..Default::default()
        })
    };
    let percent = |amount: Decimal, pct: i64, dp: u32| (amount * Decimal::new(pct, 2)).round_dp(dp);
    let mut entries = Vec::new();
    let mut b2b_variants = Vec::new();
    for (index, seed) in seeds.iter().enumerate() {
        let in_b2b = seed.top == "office" || index % 3 == 0;
        for (sku, _, _) in &seed.variants {
            let id = variant_ids[sku];
            entries.push(entry(base.id, id, 1, seed.base_price)?);
            if index % 5 == 1 && seed.top != "office" {
                entries.push(entry(mobile.id, id, 1, percent(seed.base_price, 95, 2))?);
            }
            if in_b2b {
                b2b_variants.push((id, seed.base_price));
                entries.push(entry(b2b.id, id, 1, percent(seed.base_price, 85, 2))?);
                entries.push(entry(b2b.id, id, 12, percent(seed.base_price, 80, 2))?);
                entries.push(entry(b2b.id, id, 48, percent(seed.base_price, 75, 2))?);
                if seed.top == "office" {
                    entries.push(entry(wholesale.id, id, 1, percent(seed.base_price, 82, 2))?);
                }
            }
        }
    }
    // Each company's contract covers 40 of the B2B variants, with its own volume tiers and
    // sub-cent unit prices (contracts are negotiated to four decimals).
    for (offset, contract_id) in contracts.iter().enumerate() {
        for (id, base_price) in b2b_variants.iter().skip(offset * 7).step_by(3).take(40) {
            entries.push(entry(
                *contract_id,
                *id,
                1,
                percent(*base_price, 78 - offset as i64, 4),
            )?);
            entries.push(entry(
                *contract_id,
                *id,
                25,
                percent(*base_price, 72 - offset as i64, 4),
            )?);
            entries.push(entry(
                *contract_id,
                *id,
                100,
                percent(*base_price, 65 - offset as i64, 4),
            )?);
        }
    }
    summary.price_entries = entries.len();
    insert_batched(txn, entries).await?;

    // ---- promotions ----
    let promotions = [
        (
            "WINTER-SALE",
            "Winter sale: 15% off jackets",
            None,
            None,
            "category",
            Some(category_ids["jackets"]),
            "percent_off",
            Decimal::new(15, 0),
            1,
            true,
            false,
            10,
        ),
        (
            "VIP-5",
            "VIP: 5% off everything",
            None,
            Some(group_ids["vip"]),
            "all",
            None,
            "percent_off",
            Decimal::new(5, 0),
            1,
            false,
            true,
            5,
        ),
        (
            "APP-SNEAKERS-10",
            "App exclusive: 10% off sneakers",
            Some(channel_ids["mobile"]),
            None,
            "category",
            Some(category_ids["sneakers"]),
            "percent_off",
            Decimal::new(10, 0),
            1,
            false,
            false,
            8,
        ),
        (
            "PAPER-BULK",
            "$1.00 off paper goods from 10 units",
            Some(channel_ids["b2b"]),
            None,
            "category",
            Some(category_ids["paper"]),
            "amount_off",
            Decimal::new(100, 2),
            10,
            false,
            true,
            3,
        ),
    ];
    for (
        code,
        name,
        channel_id,
        group_id,
        target_kind,
        target_id,
        kind,
        value,
        min_quantity,
        limited,
        stackable,
        priority,
    ) in promotions
    {
        promotion::ActiveModel {
            code: Set(code.to_owned()),
            name: Set(name.to_owned()),
            channel_id: Set(channel_id),
            customer_group_id: Set(group_id),
            target_kind: Set(target_kind.to_owned()),
            target_id: Set(target_id),
            discount_kind: Set(kind.to_owned()),
            value: Set(stored(value)?),
            // Amounts are in the B2B channel's currency; percentages apply in any currency.
            currency: Set((kind != "percent_off").then(|| "USD".to_owned())),
            min_quantity: Set(min_quantity),
            starts_at: Set(limited.then(|| now - Duration::days(7))),
            ends_at: Set(limited.then(|| now + Duration::days(30))),
            stackable: Set(stackable),
            priority: Set(priority),
            active: Set(true),
            ..Default::default()
        }
        .insert(txn)
        .await?;
    }

    // ---- quantity rules (no random draws: everything above is unchanged by them) ----
    // - B2B list (`b2b-usd`): copy paper in cases of 5, at least 10 (min 10, increment 5, no
    //   maximum) on every variant of the paper category's copy-paper products: PP-0064,
    //   PP-0142, PP-0181, PP-0207, PP-0220, PP-0272, PP-0324, PP-0337, PP-0363, PP-0389,
    //   PP-0454, PP-0480 and PP-0519 (-P1, -P2 and, for PP-0454, -P3): 28 rules.
    // - Wholesale group list (`wholesale-usd`): at most 50 per order of the first ink
    //   cartridge, IK-0039-P1, -P2 and -P3 (min 1, max 50, increment 1).
    // - ACME's contract (`contract-acme`): IK-0013-P1 (a toner) in boxes of 25, from 25 up
    //   to 1000 (min 25, max 1000, increment 25).
    let rule = |list_id: i64, variant_id: i64, min: i32, max: Option<i32>, increment: i32| {
        quantity_rule::ActiveModel {
            price_list_id: Set(list_id),
            variant_id: Set(variant_id),
            min_quantity: Set(min),
            max_quantity: Set(max),
            increment: Set(increment),
            ..Default::default()
        }
    };
    let variants_of = |seed: &SeedProduct| -> Vec<i64> {
        seed.variants
            .iter()
            .map(|(sku, _, _)| variant_ids[sku])
            .collect()
    };
    let mut rules = Vec::new();
    for seed in seeds
        .iter()
        .filter(|s| s.leaf.slug == "paper" && s.slug.contains("copy-paper"))
    {
        for id in variants_of(seed) {
            rules.push(rule(b2b.id, id, 10, None, 5));
        }
    }
    if let Some(cartridge) = seeds
        .iter()
        .find(|s| s.leaf.slug == "ink" && s.slug.contains("ink-cartridge"))
    {
        for id in variants_of(cartridge) {
            rules.push(rule(wholesale.id, id, 1, Some(50), 1));
        }
    }
    // ACME's contract (the first list of `contracts`) covers every third B2B variant from the
    // first; its first office-supplies variant is sold in boxes of 25.
    let office: std::collections::HashSet<i64> = seeds
        .iter()
        .filter(|s| s.top == "office")
        .flat_map(variants_of)
        .collect();
    if let (Some(acme), Some((id, _))) = (
        contracts.first(),
        b2b_variants
            .iter()
            .step_by(3)
            .take(40)
            .find(|(id, _)| office.contains(id)),
    ) {
        rules.push(rule(*acme, *id, 25, Some(1000), 25));
    }
    summary.quantity_rules = rules.len();
    insert_batched(txn, rules).await?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_is_deterministic() {
        let mut a = Rng(DEMO_SEED);
        let mut b = Rng(DEMO_SEED);
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
    }

    #[test]
    fn slugs_are_lowercase_words_joined_by_dashes() {
        assert_eq!(slugify("Northwind Crew Tee"), "northwind-crew-tee");
        assert_eq!(slugify("Ink & Toner -- Set"), "ink-toner-set");
    }

    #[test]
    fn the_tree_has_at_least_ten_categories() {
        let count: usize = TREE.iter().map(|(_, _, leaves)| 1 + leaves.len()).sum();
        assert!(count >= 10, "{count}");
    }
}
