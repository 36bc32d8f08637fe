//! `products(sort:)`: by name and by the channel's list price, paged with cursors bound to
//! their order. The expected orders are computed here from the database, applying the price
//! rule independently of the gateway.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use commerce_core::entities::{price_list, price_list_entry};
use e2e::{Client, open_database, shared_app, spawn_app};
use sea_orm::sea_query::Query;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DatabaseConnection, Set, Statement};
use serde_json::{Value, json};

const PAGE: &str =
    "query Page($first: Int, $after: String, $sort: ProductSort!, $filter: ProductFilterInput) {
  products(first: $first, after: $after, sort: $sort, filter: $filter) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges { cursor node { slug name } }
  }
}";

/// A visible product as the test sees it in the database.
#[derive(Clone, Debug)]
struct Listed {
    id: i64,
    name: String,
    /// The list price in ten-thousandths, by the rule of `ProductSort` (computed here).
    price: Option<i64>,
}

async fn rows(db: &DatabaseConnection, sql: &str) -> Vec<sea_orm::QueryResult> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .unwrap()
}

/// The products a channel lists, by slug, with their list prices at `now`: for each variant,
/// the `min_quantity = 1` entry of the winning list among the active lists in the channel's
/// currency, inside their window, scoped to the channel or to no one (the channel's own lists
/// first, then higher priority, then lower id); for a product, the lowest over its variants.
async fn listed_with_prices(
    db: &DatabaseConnection,
    channel: &str,
    now: DateTime<Utc>,
) -> HashMap<String, Listed> {
    let found = rows(
        db,
        &format!("SELECT id, currency FROM channel WHERE code = '{channel}'"),
    )
    .await;
    let channel_id: i64 = found[0].try_get("", "id").unwrap();
    let currency: String = found[0].try_get("", "currency").unwrap();

    struct List {
        priority: i32,
        channel_scoped: bool,
    }
    let mut lists: HashMap<i64, List> = HashMap::new();
    for row in rows(
        db,
        "SELECT id, currency, channel_id, customer_group_id, company_id, customer_id, priority,
                valid_from, valid_until, active
           FROM price_list",
    )
    .await
    {
        let get_id = |column: &str| row.try_get::<Option<i64>>("", column).unwrap();
        let valid_from: Option<DateTime<Utc>> = row.try_get("", "valid_from").unwrap();
        let valid_until: Option<DateTime<Utc>> = row.try_get("", "valid_until").unwrap();
        let list_currency: String = row.try_get("", "currency").unwrap();
        let list_channel = get_id("channel_id");
        let applies = row.try_get::<bool>("", "active").unwrap()
            && list_currency == currency
            && get_id("customer_group_id").is_none()
            && get_id("company_id").is_none()
            && get_id("customer_id").is_none()
            && list_channel.is_none_or(|id| id == channel_id)
            && valid_from.is_none_or(|from| from <= now)
            && valid_until.is_none_or(|until| now < until);
        if applies {
            lists.insert(
                row.try_get("", "id").unwrap(),
                List {
                    priority: row.try_get("", "priority").unwrap(),
                    channel_scoped: list_channel.is_some(),
                },
            );
        }
    }

    // How a list ranks for a variant (lower wins): channel-scoped first, then priority,
    // then list id, then (a duplicated tier) the lower amount.
    type Rank = (bool, Reverse<i32>, i64, i64);
    // variant id -> (rank of its best list so far, amount)
    let mut variant_price: HashMap<i64, (Rank, i64)> = HashMap::new();
    for row in rows(
        db,
        "SELECT price_list_id, variant_id, amount FROM price_list_entry WHERE min_quantity = 1",
    )
    .await
    {
        let list_id: i64 = row.try_get("", "price_list_id").unwrap();
        let Some(list) = lists.get(&list_id) else {
            continue;
        };
        let amount: i64 = row.try_get("", "amount").unwrap();
        let rank = (
            !list.channel_scoped,
            Reverse(list.priority),
            list_id,
            amount,
        );
        let variant_id: i64 = row.try_get("", "variant_id").unwrap();
        let best = variant_price.entry(variant_id).or_insert((rank, amount));
        if rank < best.0 {
            *best = (rank, amount);
        }
    }
    let mut product_price: HashMap<i64, i64> = HashMap::new();
    for row in rows(db, "SELECT id, product_id FROM variant").await {
        let variant_id: i64 = row.try_get("", "id").unwrap();
        let product_id: i64 = row.try_get("", "product_id").unwrap();
        if let Some((_, amount)) = variant_price.get(&variant_id) {
            let price = product_price.entry(product_id).or_insert(*amount);
            *price = (*price).min(*amount);
        }
    }

    rows(
        db,
        &format!(
            "SELECT p.id, p.slug, p.name FROM product p
               JOIN channel_product cp ON cp.product_id = p.id
              WHERE cp.channel_id = {channel_id} AND p.status = 'active'"
        ),
    )
    .await
    .into_iter()
    .map(|row| {
        let id: i64 = row.try_get("", "id").unwrap();
        let listed = Listed {
            id,
            name: row.try_get("", "name").unwrap(),
            price: product_price.get(&id).copied(),
        };
        (row.try_get("", "slug").unwrap(), listed)
    })
    .collect()
}

/// `slugs` in the order `sort` must list them.
fn expected_order(catalog: &HashMap<String, Listed>, slugs: &[String], sort: &str) -> Vec<String> {
    let mut expected = slugs.to_vec();
    let listed = |slug: &String| &catalog[slug];
    match sort {
        "PRICE_ASC" => expected.sort_by_key(|s| {
            let p = listed(s);
            (p.price.is_none(), p.price, p.id)
        }),
        "PRICE_DESC" => expected.sort_by_key(|s| {
            let p = listed(s);
            (p.price.is_none(), Reverse(p.price), p.id)
        }),
        "NAME" => expected.sort_by_key(|s| {
            let p = listed(s);
            (p.name.clone(), p.id)
        }),
        _ => expected.sort_by_key(|s| listed(s).id),
    }
    expected
}

/// Asserts that `slugs` are in `sort` order by their prices or names from `catalog` (a
/// message naming the first pair out of order), then that the whole order is the expected one.
fn assert_sorted(catalog: &HashMap<String, Listed>, slugs: &[String], sort: &str, what: &str) {
    for pair in slugs.windows(2) {
        let (a, b) = (&catalog[&pair[0]], &catalog[&pair[1]]);
        let in_order = match sort {
            "PRICE_ASC" | "PRICE_DESC" => match (a.price, b.price) {
                (Some(x), Some(y)) if sort == "PRICE_ASC" => x < y || (x == y && a.id < b.id),
                (Some(x), Some(y)) => x > y || (x == y && a.id < b.id),
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => a.id < b.id,
            },
            "NAME" => (&a.name, a.id) < (&b.name, b.id),
            _ => a.id < b.id,
        };
        assert!(
            in_order,
            "{what}: {} ({:?}, {:?}) listed before {} ({:?}, {:?})",
            pair[0], a.price, a.name, pair[1], b.price, b.name
        );
    }
    assert_eq!(
        slugs,
        expected_order(catalog, slugs, sort),
        "{what}: not the expected order"
    );
}

/// Every product of a listing in `sort` order, following cursors to the end; checks the
/// page and cursor invariants on the way.
async fn page_through(client: &Client, sort: &str, first: i64, filter: Value) -> Vec<String> {
    let mut after: Option<String> = None;
    let mut slugs = Vec::new();
    let mut total = None;
    loop {
        let reply = client
            .query(
                PAGE,
                json!({ "first": first, "after": after, "sort": sort, "filter": filter }),
            )
            .await;
        let products = &reply.data()["products"];
        let page_info = &products["pageInfo"];
        assert_eq!(page_info["hasPreviousPage"], after.is_some());
        let count = products["totalCount"].as_i64().unwrap();
        assert_eq!(*total.get_or_insert(count), count, "totalCount is stable");
        let edges = products["edges"].as_array().unwrap();
        if let (Some(head), Some(tail)) = (edges.first(), edges.last()) {
            assert_eq!(page_info["startCursor"], head["cursor"]);
            assert_eq!(page_info["endCursor"], tail["cursor"]);
        }
        slugs.extend(
            edges
                .iter()
                .map(|e| e["node"]["slug"].as_str().unwrap().to_owned()),
        );
        if !page_info["hasNextPage"].as_bool().unwrap() {
            break;
        }
        assert_eq!(edges.len() as i64, first, "only the last page may be short");
        after = Some(page_info["endCursor"].as_str().unwrap().to_owned());
    }
    let total = total.unwrap();
    assert_eq!(
        slugs.len() as i64,
        total,
        "{sort}: pages add up to totalCount"
    );
    let unique: HashSet<&String> = slugs.iter().collect();
    assert_eq!(unique.len(), slugs.len(), "{sort}: a product listed twice");
    slugs
}

#[tokio::test]
async fn price_orders_follow_the_cheapest_variant_list_price_on_every_page() {
    let app = shared_app();
    let db = open_database(&app.database_url).await;
    for channel in ["web", "b2b"] {
        let catalog = listed_with_prices(&db, channel, Utc::now()).await;
        let all: HashSet<&String> = catalog.keys().collect();
        let client = Client::new(&app.url).channel(channel);
        for sort in ["PRICE_ASC", "PRICE_DESC"] {
            let slugs = page_through(&client, sort, 37, Value::Null).await;
            let listed: HashSet<&String> = slugs.iter().collect();
            assert_eq!(listed, all, "{channel} {sort}: every listed product once");
            assert_sorted(&catalog, &slugs, sort, &format!("{channel} {sort}"));
        }
        let prices: HashSet<Option<i64>> = catalog.values().map(|p| p.price).collect();
        assert!(prices.len() > 10, "{channel}: the demo prices vary");
    }
    // B2B has its own channel list, so its order is not the web's.
    let web = listed_with_prices(&db, "web", Utc::now()).await;
    let b2b = listed_with_prices(&db, "b2b", Utc::now()).await;
    assert!(
        b2b.iter()
            .any(|(slug, p)| web.get(slug).is_some_and(|w| w.price != p.price)),
        "the b2b channel list prices some shared products differently"
    );
}

#[tokio::test]
async fn name_order_is_by_name_then_id() {
    let app = shared_app();
    let db = open_database(&app.database_url).await;
    let catalog = listed_with_prices(&db, "web", Utc::now()).await;
    let client = Client::new(&app.url);
    let slugs = page_through(&client, "NAME", 37, Value::Null).await;
    assert_eq!(slugs.len(), catalog.len());
    assert_sorted(&catalog, &slugs, "NAME", "web NAME");
    // The default order is still by id, with and without naming it.
    let by_id = page_through(&client, "ID", 100, Value::Null).await;
    assert_sorted(&catalog, &by_id, "ID", "web ID");
    let default = client
        .query("{ products(first: 5) { nodes { slug } } }", json!({}))
        .await;
    let default: Vec<&str> = default.data()["products"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["slug"].as_str().unwrap())
        .collect();
    assert_eq!(
        default,
        by_id[..5].iter().map(String::as_str).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn sorting_keeps_filters_total_count_and_has_next_page() {
    let app = shared_app();
    let db = open_database(&app.database_url).await;
    let catalog = listed_with_prices(&db, "web", Utc::now()).await;
    let client = Client::new(&app.url);
    for filter in [
        json!({ "search": "tee" }),
        json!({ "attributes": [{ "key": "material", "value": "cotton" }] }),
    ] {
        let mut matching = page_through(&client, "ID", 100, filter.clone()).await;
        matching.sort();
        assert!(matching.len() > 7, "{filter}: enough products to page");
        for sort in ["NAME", "PRICE_ASC", "PRICE_DESC"] {
            let slugs = page_through(&client, sort, 7, filter.clone()).await;
            let mut same = slugs.clone();
            same.sort();
            assert_eq!(same, matching, "{filter} {sort}: the filter still applies");
            assert_sorted(&catalog, &slugs, sort, &format!("{filter} {sort}"));
        }
    }
}

#[tokio::test]
async fn a_cursor_only_continues_a_listing_in_its_own_order() {
    let app = shared_app();
    let client = Client::new(&app.url);
    let end_cursor = |reply: &e2e::Reply| {
        reply.data()["products"]["pageInfo"]["endCursor"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let first = client
        .query(PAGE, json!({ "first": 5, "sort": "PRICE_ASC" }))
        .await;
    let price_cursor = end_cursor(&first);
    let by_id = client
        .query(PAGE, json!({ "first": 5, "sort": "ID" }))
        .await;
    let id_cursor = end_cursor(&by_id);
    for (cursor, sort) in [
        (&price_cursor, "NAME"),
        (&price_cursor, "PRICE_DESC"),
        (&price_cursor, "ID"),
        (&id_cursor, "PRICE_ASC"),
        (&id_cursor, "NAME"),
    ] {
        let refused = client
            .query(PAGE, json!({ "first": 5, "sort": sort, "after": cursor }))
            .await;
        assert_eq!(
            refused.error_codes(),
            ["BAD_USER_INPUT"],
            "{sort}: {}",
            refused.text
        );
        assert_eq!(refused.body["errors"][0]["extensions"]["field"], "after");
    }
    // The message says which order the cursor belongs to.
    let refused = client
        .query(
            PAGE,
            json!({ "first": 5, "sort": "NAME", "after": price_cursor }),
        )
        .await;
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("PRICE_ASC"), "{message}");
    // In its own order, the cursor continues where the page ended.
    let next = client
        .query(
            PAGE,
            json!({ "first": 5, "sort": "PRICE_ASC", "after": price_cursor }),
        )
        .await;
    let ten = client
        .query(PAGE, json!({ "first": 10, "sort": "PRICE_ASC" }))
        .await;
    let slugs = |reply: &e2e::Reply| -> Vec<String> {
        reply.data()["products"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["slug"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(slugs(&ten)[5..], slugs(&next)[..]);
}

/// Inserts a price list; `None` for the channel means unscoped.
#[allow(clippy::too_many_arguments)]
async fn insert_list(
    db: &DatabaseConnection,
    code: &str,
    currency: &str,
    channel_id: Option<i64>,
    group_id: Option<i64>,
    priority: i32,
    window: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    active: bool,
) -> i64 {
    price_list::ActiveModel {
        code: Set(code.to_owned()),
        name: Set(code.to_owned()),
        currency: Set(currency.to_owned()),
        channel_id: Set(channel_id),
        customer_group_id: Set(group_id),
        priority: Set(priority),
        valid_from: Set(window.0),
        valid_until: Set(window.1),
        active: Set(active),
        ..Default::default()
    }
    .insert(db)
    .await
    .unwrap()
    .id
}

/// Prices every variant of `product_id` at `amount` (ten-thousandths) from `min_quantity`.
async fn insert_entries(
    db: &DatabaseConnection,
    list_id: i64,
    product_id: i64,
    min_quantity: i32,
    amount: i64,
) {
    for row in rows(
        db,
        &format!("SELECT id FROM variant WHERE product_id = {product_id}"),
    )
    .await
    {
        let variant_id: i64 = row.try_get("", "id").unwrap();
        let insert = Query::insert()
            .into_table(price_list_entry::Entity)
            .columns([
                price_list_entry::Column::PriceListId,
                price_list_entry::Column::VariantId,
                price_list_entry::Column::MinQuantity,
                price_list_entry::Column::Amount,
            ])
            .values_panic([
                list_id.into(),
                variant_id.into(),
                min_quantity.into(),
                amount.into(),
            ])
            .to_owned();
        db.execute(&insert).await.unwrap();
    }
}

/// Lists that must not count (other channel, group, currency, out of their window, inactive,
/// outranked, without a tier for one unit), one that must, and products without any price.
#[tokio::test]
async fn only_the_channel_list_price_an_anonymous_viewer_gets_now_counts() {
    let app = spawn_app().await;
    let db = open_database(&app.database_url).await;
    let channel_id = |code: &'static str| {
        let db = db.clone();
        async move {
            let found = rows(
                &db,
                &format!("SELECT id FROM channel WHERE code = '{code}'"),
            )
            .await;
            found[0].try_get::<i64>("", "id").unwrap()
        }
    };
    let (web, mobile) = (channel_id("web").await, channel_id("mobile").await);
    let vip: i64 = rows(&db, "SELECT id FROM customer_group WHERE code = 'vip'").await[0]
        .try_get("", "id")
        .unwrap();
    let on_both: Vec<i64> = rows(
        &db,
        &format!(
            "SELECT p.id FROM product p WHERE p.status = 'active'
                AND p.id IN (SELECT product_id FROM channel_product WHERE channel_id = {web})
                AND p.id IN (SELECT product_id FROM channel_product WHERE channel_id = {mobile})
              ORDER BY p.id LIMIT 7"
        ),
    )
    .await
    .iter()
    .map(|row| row.try_get("", "id").unwrap())
    .collect();
    let [cheap, also_cheap, dear, decoy, u1, u2, u3] = on_both[..] else {
        panic!("seven products on web and mobile");
    };
    let unpriced = [u1, u2, u3];
    let now = Utc::now();
    let day = Duration::days(1);

    // Live now on web: the cheapest and the dearest products of the channel.
    let live = insert_list(
        &db,
        "sort-live",
        "USD",
        Some(web),
        None,
        5,
        (Some(now - day), Some(now + day)),
        true,
    )
    .await;
    insert_entries(&db, live, cheap, 1, 1).await;
    insert_entries(&db, live, also_cheap, 1, 1).await;
    insert_entries(&db, live, dear, 1, 2_000_000_000).await;
    // Outranked by the live list (lower priority).
    let outranked = insert_list(
        &db,
        "sort-outranked",
        "USD",
        Some(web),
        None,
        1,
        (None, None),
        true,
    )
    .await;
    insert_entries(&db, outranked, dear, 1, 0).await;
    // None of these apply to an anonymous web viewer now; each would make the decoy free.
    let ignored = [
        (
            "sort-future",
            "USD",
            Some(web),
            None,
            (Some(now + day), None),
            true,
        ),
        (
            "sort-expired",
            "USD",
            Some(web),
            None,
            (None, Some(now - day)),
            true,
        ),
        ("sort-inactive", "USD", Some(web), None, (None, None), false),
        ("sort-eur", "EUR", Some(web), None, (None, None), true),
        ("sort-vip", "USD", None, Some(vip), (None, None), true),
        ("sort-mobile", "USD", Some(mobile), None, (None, None), true),
    ];
    for (code, currency, channel, group, window, active) in ignored {
        let list = insert_list(&db, code, currency, channel, group, 50, window, active).await;
        insert_entries(&db, list, decoy, 1, 0).await;
    }
    // A tier from 12 units does not price one unit.
    let bulk = insert_list(
        &db,
        "sort-bulk",
        "USD",
        Some(web),
        None,
        50,
        (None, None),
        true,
    )
    .await;
    insert_entries(&db, bulk, decoy, 12, 0).await;
    // No price anywhere.
    for product_id in unpriced {
        db.execute_unprepared(&format!(
            "DELETE FROM price_list_entry WHERE variant_id IN
               (SELECT id FROM variant WHERE product_id = {product_id})"
        ))
        .await
        .unwrap();
    }

    let catalog = listed_with_prices(&db, "web", Utc::now()).await;
    let slug_of = |id: i64| {
        catalog
            .iter()
            .find(|(_, p)| p.id == id)
            .map(|(slug, _)| slug.clone())
            .unwrap()
    };
    assert_eq!(catalog[&slug_of(cheap)].price, Some(1));
    assert_eq!(catalog[&slug_of(dear)].price, Some(2_000_000_000));
    assert!(catalog[&slug_of(decoy)].price.is_some_and(|p| p > 0));
    let client = Client::new(app.gateway.url());
    let ascending = page_through(&client, "PRICE_ASC", 37, Value::Null).await;
    assert_sorted(&catalog, &ascending, "PRICE_ASC", "web PRICE_ASC");
    assert_eq!(ascending[..2], [slug_of(cheap), slug_of(also_cheap)]);
    let last_three: Vec<String> = unpriced.iter().map(|&id| slug_of(id)).collect();
    assert_eq!(ascending[ascending.len() - 3..], last_three[..]);
    let descending = page_through(&client, "PRICE_DESC", 37, Value::Null).await;
    assert_sorted(&catalog, &descending, "PRICE_DESC", "web PRICE_DESC");
    assert_eq!(descending[0], slug_of(dear));
    assert_eq!(descending[descending.len() - 3..], last_three[..]);

    // Small pages across ties and into the unpriced products: the keyset holds.
    let skus: Vec<String> = rows(
        &db,
        &format!(
            "SELECT MIN(sku) AS sku FROM variant WHERE product_id IN ({})
              GROUP BY product_id",
            on_both
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .await
    .iter()
    .map(|row| row.try_get("", "sku").unwrap())
    .collect();
    let filter = json!({ "skus": skus });
    for sort in ["PRICE_ASC", "PRICE_DESC"] {
        for first in [1, 2] {
            let slugs = page_through(&client, sort, first, filter.clone()).await;
            assert_eq!(slugs.len(), 7);
            assert_sorted(&catalog, &slugs, sort, &format!("{sort} by {first}"));
        }
    }

    // On mobile the mobile-only list applies, and the web lists do not.
    let mobile_catalog = listed_with_prices(&db, "mobile", Utc::now()).await;
    assert_eq!(mobile_catalog[&slug_of(decoy)].price, Some(0));
    let mobile_client = Client::new(app.gateway.url()).channel("mobile");
    let mobile_ascending = page_through(&mobile_client, "PRICE_ASC", 100, Value::Null).await;
    assert_sorted(
        &mobile_catalog,
        &mobile_ascending,
        "PRICE_ASC",
        "mobile PRICE_ASC",
    );
    assert_eq!(mobile_ascending[0], slug_of(decoy));
}
