//! The event bus in cluster mode: events published through one gateway reach the
//! subscribers of another through Redis pub/sub (needs `TEST_REDIS_URL`).

use std::time::Duration;

use e2e::{Client, TestApp, spawn_app_with, test_redis_url};
use gateway::Config;
use gateway::auth::Role;
use gateway::bus::Event;
use serde_json::json;
use tokio::sync::broadcast;

const RECEIVE: &str = "mutation($input: ReceiveStockInput!) { receiveStock(input: $input) { sku location onHand version } }";
const WAIT: Duration = Duration::from_secs(10);

/// A gateway whose bus travels through Redis on `<prefix>events`.
async fn clustered(url: &str, prefix: &str) -> TestApp {
    let (url, prefix) = (url.to_owned(), prefix.to_owned());
    spawn_app_with(move |config: &mut Config| {
        config.redis_url = Some(url);
        config.limits.redis_key_prefix = prefix;
    })
    .await
}

async fn next(events: &mut broadcast::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event within the wait")
        .expect("no event missed")
}

#[tokio::test]
async fn an_event_published_through_one_gateway_reaches_the_other_once() {
    let Some(url) = test_redis_url() else {
        eprintln!("skipped: needs TEST_REDIS_URL (Redis)");
        return;
    };
    let prefix = format!("e2e:{}:", uuid::Uuid::new_v4().simple());
    let a = clustered(&url, &prefix).await;
    let b = clustered(&url, &prefix).await;
    let channel = format!("{prefix}events");
    assert_eq!(a.gateway.state.bus.redis_channel(), Some(channel.as_str()));
    let mut on_a = a.gateway.state.bus.subscribe();
    let mut on_b = b.gateway.state.bus.subscribe();

    // A stock change committed through A.
    let admin = Client::new(a.gateway.url()).token(a.token("web", Role::Admin, None, None));
    let received = admin
        .query(
            RECEIVE,
            json!({ "input": { "sku": "TS-0001-M", "location": "WH-EAST", "quantity": 3 } }),
        )
        .await;
    let on_hand = received.data()["receiveStock"][0]["onHand"]
        .as_i64()
        .unwrap();
    let heard_on_a = next(&mut on_a).await;
    let Event::StockChanged { levels } = &heard_on_a else {
        panic!("not a stock change: {heard_on_a:?}");
    };
    assert_eq!(i64::from(levels[0].on_hand), on_hand);
    assert_eq!(
        next(&mut on_b).await,
        heard_on_a,
        "B heard what A published"
    );

    // One published straight on A's bus, then a marker from B: anything heard twice would
    // arrive before the marker.
    let prices = Event::PricesChanged {
        list_ids: vec![1],
        variant_ids: vec![2, 3],
        promotion_ids: vec![],
    };
    a.gateway.state.bus.publish(prices.clone());
    assert_eq!(next(&mut on_a).await, prices);
    assert_eq!(next(&mut on_b).await, prices);
    let marker = Event::PricesChanged {
        list_ids: vec![42],
        variant_ids: vec![],
        promotion_ids: vec![],
    };
    b.gateway.state.bus.publish(marker.clone());
    assert_eq!(next(&mut on_b).await, marker);
    assert_eq!(
        next(&mut on_a).await,
        marker,
        "A heard one of its own events twice"
    );
    a.gateway.stop().await.expect("A stops");
    // B heard nothing of its own twice either.
    a_marker_is_last(&mut on_b).await;
    b.gateway.stop().await.expect("B stops");
}

/// Nothing more arrives on `events` (the bus task of the other gateway has stopped).
async fn a_marker_is_last(events: &mut broadcast::Receiver<Event>) {
    assert!(
        matches!(
            events.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ),
        "an event was delivered twice"
    );
}
