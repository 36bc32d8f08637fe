//! Viewers from tokens: the token table (every way a token can be wrong), the channel a token
//! fixes, and what each role may do on each channel.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use e2e::{Client, StatusCode, shared_app};
use gateway::auth::{AuthConfig, Authenticator, Claims, MIN_SECRET_LEN, Role, Secret};
use serde_json::{Value, json};

const CHANNEL: &str = "{ channel { code } }";

fn forge(header: &str, claims: &Claims) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap())
    )
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_a_reason() {
    let app = shared_app();
    let good_claims = app.auth.claims(
        "web",
        Role::Shopper,
        Some("shopper@example.com".into()),
        None,
        Some(600),
    );
    let now = good_claims.iat;
    let mint = |claims: &Claims| app.auth.mint(claims).unwrap();
    let stranger = Authenticator::new(
        &AuthConfig::default(),
        Some(&Secret::new("z".repeat(MIN_SECRET_LEN))),
    )
    .unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            mint(&Claims {
                exp: now - 3600,
                ..good_claims.clone()
            }),
            "expired",
        ),
        (
            "not yet valid",
            mint(&Claims {
                nbf: now + 3600,
                ..good_claims.clone()
            }),
            "not valid yet",
        ),
        (
            "wrong issuer",
            mint(&Claims {
                iss: "evil".into(),
                ..good_claims.clone()
            }),
            "issuer or audience",
        ),
        (
            "wrong audience",
            mint(&Claims {
                aud: "other-api".into(),
                ..good_claims.clone()
            }),
            "issuer or audience",
        ),
        (
            "wrong key",
            stranger.mint(&good_claims).unwrap(),
            "signature",
        ),
        (
            "alg none",
            forge(r#"{"alg":"none","typ":"JWT"}"#, &good_claims),
            "algorithm",
        ),
        (
            "RS256 without a configured key",
            forge(r#"{"alg":"RS256","typ":"JWT"}"#, &good_claims),
            "algorithm",
        ),
        ("malformed", "abc.def".into(), "not a valid JWT"),
        (
            "unknown customer",
            mint(&Claims {
                customer: Some("nobody@example.com".into()),
                ..good_claims.clone()
            }),
            "customer",
        ),
    ];
    for (name, token, reason) in cases {
        let reply = Client::new(&app.url)
            .token(token)
            .query(CHANNEL, json!({}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            reply.text
        );
        assert_eq!(reply.error_codes(), ["UNAUTHENTICATED"], "{name}");
        assert!(reply.body.get("data").is_none(), "{name}: no data");
        let message = reply.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{name}: {message}");
    }
    // A header that is not a bearer token.
    let http = reqwest::Client::new();
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer  "] {
        let response = http
            .post(format!("{}/graphql", app.url))
            .header("content-type", "application/json")
            .header("authorization", value)
            .body(json!({ "query": CHANNEL }).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value}");
        assert!(response.headers().contains_key("www-authenticate"));
    }
    // The good token works, and fixes the channel.
    let reply = Client::new(&app.url)
        .token(mint(&good_claims))
        .query(CHANNEL, json!({}))
        .await;
    assert_eq!(reply.data()["channel"]["code"], "web");
}

#[tokio::test]
async fn a_token_fixes_its_channel_and_a_disagreeing_header_is_refused() {
    let app = shared_app();
    let buyer = app.token("b2b", Role::B2bBuyer, Some("buyer@acme.example"), None);
    let reply = Client::new(&app.url)
        .token(buyer.clone())
        .query(CHANNEL, json!({}))
        .await;
    assert_eq!(reply.data()["channel"]["code"], "b2b");
    let same = Client::new(&app.url)
        .token(buyer.clone())
        .channel("B2B")
        .query(CHANNEL, json!({}))
        .await;
    assert_eq!(same.data()["channel"]["code"], "b2b");
    let other = Client::new(&app.url)
        .token(buyer)
        .channel("web")
        .query(CHANNEL, json!({}))
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    assert_eq!(other.error_codes(), ["FORBIDDEN"]);
}

#[tokio::test]
async fn roles_must_fit_their_channel_and_identity() {
    let app = shared_app();
    for (name, token) in [
        (
            "a clerk of a store that does not feed the channel",
            app.token("pos", Role::PosClerk, None, Some("WH-EAST")),
        ),
        (
            "a clerk without a store",
            app.token("pos", Role::PosClerk, None, None),
        ),
        (
            "a buyer without a company",
            app.token("b2b", Role::B2bBuyer, Some("shopper@example.com"), None),
        ),
        (
            "a shopper without a customer",
            app.token("web", Role::Shopper, None, None),
        ),
    ] {
        let reply = Client::new(&app.url)
            .token(token)
            .query(CHANNEL, json!({}))
            .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{name}");
        assert_eq!(reply.error_codes(), ["FORBIDDEN"], "{name}");
    }
}

/// Role × channel over every guarded field and mutation: per-location stock, contract
/// prices, admin mutations.
#[tokio::test]
async fn the_role_and_channel_matrix_of_guarded_fields() {
    let app = shared_app();
    let stock = r#"{ variant(sku: "TS-0001-M") { stockLevels { available } } }"#;
    let mutation = r#"mutation { updatePromotion(id: "UHJvbW90aW9uOjk5OTk5", input: { priority: 1 }) { code } }"#;
    let viewers: Vec<(&str, Option<String>, &str, bool, &str)> = vec![
        // (who, token, channel header, stock allowed, mutation outcome)
        ("anonymous web", None, "web", false, "FORBIDDEN"),
        ("anonymous pos", None, "pos", false, "FORBIDDEN"),
        (
            "web shopper",
            Some(app.token("web", Role::Shopper, Some("shopper@example.com"), None)),
            "",
            false,
            "FORBIDDEN",
        ),
        (
            "pos clerk",
            Some(app.token("pos", Role::PosClerk, None, Some("STORE-MALL"))),
            "",
            true,
            "FORBIDDEN",
        ),
        (
            "b2b buyer",
            Some(app.token("b2b", Role::B2bBuyer, Some("buyer@acme.example"), None)),
            "",
            false,
            "FORBIDDEN",
        ),
        (
            "admin on web",
            Some(app.token("web", Role::Admin, None, None)),
            "",
            true,
            // Allowed: it gets as far as looking the promotion up.
            "NOT_FOUND",
        ),
    ];
    for (who, token, channel, stock_allowed, mutation_code) in viewers {
        let mut client = Client::new(&app.url);
        if let Some(token) = token {
            client = client.token(token);
        }
        if !channel.is_empty() {
            client = client.channel(channel);
        }
        let reply = client.query(stock, json!({})).await;
        if stock_allowed {
            assert!(
                reply.body["data"]["variant"]["stockLevels"].is_array(),
                "{who}: {}",
                reply.text
            );
        } else {
            assert_eq!(reply.error_codes(), ["FORBIDDEN"], "{who}: {}", reply.text);
        }
        let reply = client.query(mutation, json!({})).await;
        assert_eq!(
            reply.error_codes(),
            [mutation_code],
            "{who}: {}",
            reply.text
        );
    }
}

#[tokio::test]
async fn each_company_buyer_sees_its_own_contract_price_over_http() {
    let app = shared_app();
    let db = e2e::open_database(&app.database_url).await;
    use sea_orm::{ConnectionTrait, Statement};
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT v.sku, e.amount FROM price_list_entry e JOIN price_list l ON l.id = e.price_list_id
               JOIN variant v ON v.id = e.variant_id
              WHERE l.code = 'contract-acme' AND e.min_quantity = 1 AND v.id NOT IN (SELECT variant_id FROM quantity_rule)
              ORDER BY v.sku LIMIT 1"
                .to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let sku: String = row.try_get("", "sku").unwrap();
    let contract = rust_decimal::Decimal::new(row.try_get::<i64>("", "amount").unwrap(), 4);
    let query = "query($sku: String!) { variant(sku: $sku) { price { listUnitPrice tier { priceList scope } } } }";
    let price_for = |token: String| {
        let client = Client::new(&app.url).token(token);
        let sku = sku.clone();
        async move {
            let reply = client.query(query, json!({ "sku": sku })).await;
            reply.data()["variant"]["price"].clone()
        }
    };
    let acme = price_for(app.token("b2b", Role::B2bBuyer, Some("buyer@acme.example"), None)).await;
    let globex =
        price_for(app.token("b2b", Role::B2bBuyer, Some("buyer@globex.example"), None)).await;
    let anonymous = Client::new(&app.url)
        .channel("b2b")
        .query(query, json!({ "sku": sku }))
        .await;
    let anonymous = &anonymous.data()["variant"]["price"];
    let amount = |v: &Value| -> rust_decimal::Decimal {
        v["listUnitPrice"].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(amount(&acme), contract);
    assert_eq!(acme["tier"]["priceList"], "contract-acme");
    assert_ne!(
        globex["tier"]["priceList"], "contract-acme",
        "never another company's contract"
    );
    assert_ne!(amount(&globex), contract);
    assert_eq!(anonymous["tier"]["scope"], "CHANNEL");
}

#[tokio::test]
async fn introspection_is_for_admins_outside_demo_mode() {
    let database_url = e2e::fresh_database_url().await;
    let config = gateway::Config {
        listen: "127.0.0.1:0".into(),
        database_url: database_url.to_string(),
        jwt_secret: Some(Secret::new("k".repeat(MIN_SECRET_LEN))),
        ..gateway::Config::default()
    };
    let gateway = gateway::start(config, false).await.unwrap();
    commerce_core::demo::seed_if_empty(&gateway.state.db)
        .await
        .unwrap();
    // Written behind the gateway's back: announced, as `announceCatalogChange` does.
    gateway
        .state
        .bus
        .publish(gateway::bus::Event::CatalogChanged);
    let introspection = "{ __schema { queryType { name } } }";
    let anonymous = Client::new(gateway.url())
        .query(introspection, json!({}))
        .await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
    assert_eq!(anonymous.error_codes(), ["FORBIDDEN"], "{}", anonymous.text);
    assert!(anonymous.body.get("data").is_none());
    let auth = &gateway.state.auth;
    let admin = auth
        .mint(&auth.claims("web", Role::Admin, None, None, Some(60)))
        .unwrap();
    let reply = Client::new(gateway.url())
        .token(admin)
        .query(introspection, json!({}))
        .await;
    assert_eq!(reply.data()["__schema"]["queryType"]["name"], "Query");
    // __typename is not introspection.
    let plain = Client::new(gateway.url())
        .query("{ __typename }", json!({}))
        .await;
    assert_eq!(plain.data()["__typename"], "Query");
    gateway.stop().await.unwrap();
}
