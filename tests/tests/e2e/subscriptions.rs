//! Live stock over real sockets: `stockChanged` over `graphql-transport-ws` (every error path of
//! the protocol), over the legacy `graphql-ws`, over `multipart/mixed` HTTP; resuming with
//! `since`; and across two gateways sharing PostgreSQL and Redis.

use std::time::Duration;

use e2e::{Client, RedisProxy, TestApp, spawn_app, spawn_app_with};
use futures_util::{SinkExt, StreamExt};
use gateway::Config;
use gateway::auth::Role;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(10);
const SKU: &str = "TS-0001-M";
const ADJUST: &str = "mutation($input: AdjustStockInput!) { adjustStock(input: $input) { sku location onHand reserved available version } }";
const WATCH: &str = "subscription($skus: [String!], $since: [HeldStockVersion!], $locationId: ID) { stockChanged(skus: $skus, since: $since, locationId: $locationId) { kind sku location locationId onHand reserved available version sequence missed } }";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `/graphql/ws` offering `protocol`.
async fn open(app: &TestApp, protocol: &str) -> Socket {
    let url = app.gateway.url().replace("http://", "ws://") + "/graphql/ws";
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_str(protocol).unwrap(),
    );
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the socket opens");
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        protocol,
        "the server speaks the offered protocol"
    );
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .expect("sent");
}

/// The next JSON message (keep-alives skipped).
async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("a message within the wait")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] != "ka" {
                    return value;
                }
            }
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// The close code and reason the server ends the socket with.
async fn closed(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .expect("closed within the wait");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (frame.code.into(), frame.reason.to_string());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A socket past `connection_init` / `connection_ack` with `token`.
async fn connected(app: &TestApp, token: &str) -> Socket {
    let mut socket = open(app, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } }),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "connection_ack");
    socket
}

async fn subscribe(socket: &mut Socket, id: &str, variables: Value) {
    send(
        socket,
        json!({ "id": id, "type": "subscribe", "payload": { "query": WATCH, "variables": variables } }),
    )
    .await;
}

/// The payload of the next `next` message of `id`.
async fn next_event(socket: &mut Socket, id: &str) -> Value {
    let message = receive(socket).await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], id, "{message}");
    assert!(message["payload"].get("errors").is_none(), "{message}");
    message["payload"]["data"]["stockChanged"].clone()
}

/// Adjusts `sku` at `location` by `delta` through `app` as an admin; the level after it.
async fn adjust(app: &TestApp, sku: &str, location: &str, delta: i32) -> Value {
    let admin = Client::new(app.gateway.url()).token(app.token("web", Role::Admin, None, None));
    let reply = admin
        .query(
            ADJUST,
            json!({ "input": { "sku": sku, "location": location, "delta": delta, "reason": "count" } }),
        )
        .await;
    reply.data()["adjustStock"][0].clone()
}

/// Lets a subscription that has just been sent reach the bus before a change is made.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_subscriber_receives_an_adjustment_with_the_right_numbers() {
    let app = spawn_app().await;
    let mut socket = connected(&app, &app.token("web", Role::Admin, None, None)).await;
    subscribe(&mut socket, "1", json!({ "skus": [SKU] })).await;
    settle().await;
    let level = adjust(&app, SKU, "WH-EAST", -2).await;
    let event = next_event(&mut socket, "1").await;
    assert_eq!(event["kind"], "CHANGED");
    assert_eq!(event["sku"], SKU);
    assert_eq!(event["location"], "WH-EAST");
    for field in ["onHand", "reserved", "available", "version"] {
        assert_eq!(event[field], level[field], "{field}: {event} vs {level}");
    }
    assert!(event["sequence"].as_i64().unwrap() > 0);
    // A change of another SKU is not sent; the client's `complete` stops the subscription.
    adjust(&app, "HD-0002-M", "WH-EAST", 1).await;
    let again = adjust(&app, SKU, "WH-EAST", 1).await;
    let event = next_event(&mut socket, "1").await;
    assert_eq!(event["sku"], SKU);
    assert_eq!(event["version"], again["version"]);
    send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    settle().await;
    adjust(&app, SKU, "WH-EAST", 1).await;
    send(&mut socket, json!({ "type": "ping" })).await;
    assert_eq!(
        receive(&mut socket).await,
        json!({ "type": "pong" }),
        "nothing more for the completed subscription"
    );
}

#[tokio::test]
async fn a_pos_clerk_watches_the_store_and_others_are_refused() {
    let app = spawn_app().await;
    let clerk = app.token("pos", Role::PosClerk, None, Some("STORE-DOWNTOWN"));
    let mut socket = connected(&app, &clerk).await;
    subscribe(&mut socket, "s", json!({ "skus": [SKU] })).await;
    settle().await;
    let level = adjust(&app, SKU, "STORE-DOWNTOWN", 1).await;
    let event = next_event(&mut socket, "s").await;
    assert_eq!(event["location"], "STORE-DOWNTOWN");
    assert_eq!(event["onHand"], level["onHand"]);

    // An anonymous web socket may connect, but exact stock is refused: `next` with the
    // error, then `complete` (it passed validation).
    let mut anonymous = open(&app, "graphql-transport-ws").await;
    send(&mut anonymous, json!({ "type": "connection_init" })).await;
    assert_eq!(receive(&mut anonymous).await["type"], "connection_ack");
    subscribe(&mut anonymous, "a", json!({ "skus": [SKU] })).await;
    let refused = receive(&mut anonymous).await;
    assert_eq!(refused["type"], "next", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"],
        "FORBIDDEN"
    );
    assert_eq!(
        receive(&mut anonymous).await,
        json!({ "id": "a", "type": "complete" })
    );

    // Bad arguments are coded errors too.
    for (variables, code, field) in [
        (json!({ "skus": ["NO-SUCH-SKU"] }), "NOT_FOUND", "skus"),
        (
            json!({ "skus": [SKU], "locationId": "bm9wZQ" }),
            "BAD_USER_INPUT",
            "locationId",
        ),
    ] {
        subscribe(&mut socket, "bad", variables).await;
        let refused = receive(&mut socket).await;
        assert_eq!(
            refused["payload"]["errors"][0]["extensions"]["code"], code,
            "{refused}"
        );
        assert_eq!(
            refused["payload"]["errors"][0]["extensions"]["field"], field,
            "{refused}"
        );
        assert_eq!(receive(&mut socket).await["type"], "complete");
    }
}

#[tokio::test]
async fn every_protocol_error_path_over_a_real_socket() {
    let app = spawn_app_with(|config: &mut Config| {
        config.websocket.connection_init_timeout_secs = 1;
        config.auth.leeway_secs = 0;
    })
    .await;
    let admin = app.token("web", Role::Admin, None, None);

    // 4403 when the token expires on an open socket: it does not outlive its token.
    let auth = &app.gateway.state.auth;
    let short = auth
        .mint(&auth.claims("web", Role::Admin, None, None, Some(2)))
        .unwrap();
    let mut socket = connected(&app, &short).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(
        (code, reason.as_str()),
        (4403, "UNAUTHENTICATED: the token has expired")
    );

    // 4400 for an id over 128 bytes; an `error` for a subscription of two root fields.
    let mut socket = connected(&app, &admin).await;
    subscribe(&mut socket, &"x".repeat(129), json!({ "skus": [SKU] })).await;
    assert_eq!(closed(&mut socket).await.0, 4400);
    let mut socket = connected(&app, &admin).await;
    send(
        &mut socket,
        json!({ "id": "two", "type": "subscribe", "payload": { "query": "subscription { a: stockChanged { kind } b: stockChanged { kind } }" } }),
    )
    .await;
    let error = receive(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    // 4408: no connection_init in time.
    let mut socket = open(&app, "graphql-transport-ws").await;
    assert_eq!(closed(&mut socket).await.0, 4408);

    // 4401: subscribe before connection_ack.
    let mut socket = open(&app, "graphql-transport-ws").await;
    subscribe(&mut socket, "1", json!({ "skus": [SKU] })).await;
    assert_eq!(closed(&mut socket).await, (4401, "Unauthorized".to_owned()));

    // 4429: a second connection_init.
    let mut socket = connected(&app, &admin).await;
    send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(closed(&mut socket).await.0, 4429);

    // 4400: malformed messages of every kind.
    for bad in [
        Message::text("{not json"),
        Message::text("[1]"),
        Message::text(r#"{"type":"subscribe"}"#),
        Message::text(r#"{"type":"no_such_type"}"#),
        Message::text(r#"{"id":"1","type":"subscribe","payload":{"query":7}}"#),
        Message::binary(vec![1, 2, 3]),
    ] {
        let mut socket = connected(&app, &admin).await;
        socket.send(bad.clone()).await.unwrap();
        let (code, reason) = closed(&mut socket).await;
        assert_eq!(code, 4400, "{bad:?}: {reason}");
        assert!(reason.starts_with("Invalid message received"), "{reason}");
    }

    // 1009: a message over websocket.max_message_bytes (64 KiB), with the limit in the reason.
    let mut socket = connected(&app, &admin).await;
    let huge =
        json!({ "id": "big", "type": "subscribe", "payload": { "query": "x".repeat(70_000) } });
    socket.send(Message::text(huge.to_string())).await.unwrap();
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains("65536"), "{reason}");

    // 4409: an id that is already running.
    let mut socket = connected(&app, &admin).await;
    subscribe(&mut socket, "dup", json!({ "skus": [SKU] })).await;
    subscribe(&mut socket, "dup", json!({ "skus": [SKU] })).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 4409);
    assert_eq!(reason, "Subscriber for dup already exists");

    // 4403: a token that does not verify.
    let mut socket = open(&app, "graphql-transport-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "Authorization": "Bearer not.a.token" } }),
    )
    .await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 4403);
    assert!(reason.starts_with("UNAUTHENTICATED"), "{reason}");

    // ping / pong, an `error` message (not next + complete) for an invalid operation, and a
    // query over the socket: one `next`, then `complete`.
    let mut socket = connected(&app, &admin).await;
    send(
        &mut socket,
        json!({ "type": "ping", "payload": { "n": 1 } }),
    )
    .await;
    assert_eq!(
        receive(&mut socket).await,
        json!({ "type": "pong", "payload": { "n": 1 } })
    );
    send(
        &mut socket,
        json!({ "id": "v", "type": "subscribe", "payload": { "query": "subscription { stockChanged { noSuchField } }" } }),
    )
    .await;
    let error = receive(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "v");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    send(
        &mut socket,
        json!({ "id": "p", "type": "subscribe", "payload": { "query": "subscription {" } }),
    )
    .await;
    let error = receive(&mut socket).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ channel { code } }" } }),
    )
    .await;
    let result = receive(&mut socket).await;
    assert_eq!(result["type"], "next");
    assert_eq!(result["payload"]["data"]["channel"]["code"], "web");
    assert_eq!(
        receive(&mut socket).await,
        json!({ "id": "q", "type": "complete" })
    );
    // The id of a finished operation may be used again.
    send(
        &mut socket,
        json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ channel { code } }" } }),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "next");
    assert_eq!(receive(&mut socket).await["type"], "complete");

    // 4406: no subprotocol the server speaks.
    let url = app.gateway.url().replace("http://", "ws://") + "/graphql/ws";
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(closed(&mut socket).await.0, 4406);
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_works() {
    let app = spawn_app().await;
    let mut socket = open(&app, "graphql-ws").await;
    let token = app.token("web", Role::Admin, None, None);
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "connection_ack");
    send(
        &mut socket,
        json!({ "id": "1", "type": "start", "payload": { "query": WATCH, "variables": { "skus": [SKU] } } }),
    )
    .await;
    settle().await;
    let level = adjust(&app, SKU, "WH-EAST", 3).await;
    let data = receive(&mut socket).await;
    assert_eq!(data["type"], "data", "{data}");
    assert_eq!(
        data["payload"]["data"]["stockChanged"]["onHand"],
        level["onHand"]
    );
    send(&mut socket, json!({ "id": "1", "type": "stop" })).await;
    assert_eq!(
        receive(&mut socket).await,
        json!({ "id": "1", "type": "complete" })
    );
    // An invalid operation: `error`, one error object.
    send(
        &mut socket,
        json!({ "id": "2", "type": "start", "payload": { "query": "subscription { nope }" } }),
    )
    .await;
    let error = receive(&mut socket).await;
    assert_eq!(error["type"], "error");
    assert_eq!(
        error["payload"]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    send(&mut socket, json!({ "type": "connection_terminate" })).await;
    assert_eq!(closed(&mut socket).await.0, 1000);

    // A bad token: connection_error, then the socket closes.
    let mut socket = open(&app, "graphql-ws").await;
    send(
        &mut socket,
        json!({ "type": "connection_init", "payload": { "authorization": "Bearer nope" } }),
    )
    .await;
    let error = receive(&mut socket).await;
    assert_eq!(error["type"], "connection_error");
    assert_eq!(error["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(closed(&mut socket).await.0, 4403);
}

#[tokio::test]
async fn a_reconnect_with_since_catches_up_exactly() {
    let app = spawn_app().await;
    let token = app.token("web", Role::Admin, None, None);
    let (a, b) = ("TS-0001-M", "HD-0002-M");

    // The client's state: a full snapshot of both SKUs at WH-EAST (`since: []`).
    let mut socket = connected(&app, &token).await;
    let location_id = {
        let client = Client::new(app.gateway.url()).token(token.clone());
        let reply = client
            .query("{ stockLocations { id code } }", json!({}))
            .await;
        reply.data()["stockLocations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["code"] == "WH-EAST")
            .unwrap()["id"]
            .clone()
    };
    subscribe(
        &mut socket,
        "1",
        json!({ "skus": [a, b], "locationId": location_id, "since": [] }),
    )
    .await;
    let mut held = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let event = next_event(&mut socket, "1").await;
        assert_eq!(event["kind"], "CURRENT");
        held.insert(event["sku"].as_str().unwrap().to_owned(), event);
    }
    assert_eq!(held.len(), 2, "one CURRENT event per level: {held:?}");
    socket.close(None).await.unwrap();

    // Offline: A changes twice, B once, and a third SKU changes (not watched).
    adjust(&app, a, "WH-EAST", 5).await;
    let a_now = adjust(&app, a, "WH-EAST", -1).await;
    let b_now = adjust(&app, b, "WH-EAST", 2).await;
    adjust(&app, "TS-0001-L", "WH-EAST", 2).await;

    // Back with `since`: exactly the latest state of A and B, once each, then live.
    let mut socket = connected(&app, &token).await;
    let since: Vec<Value> = held
        .values()
        .map(|e| json!({ "sku": e["sku"], "locationId": e["locationId"], "version": e["version"] }))
        .collect();
    subscribe(
        &mut socket,
        "2",
        json!({ "skus": [a, b], "locationId": location_id, "since": since }),
    )
    .await;
    let first = next_event(&mut socket, "2").await;
    let second = next_event(&mut socket, "2").await;
    assert_eq!(first["kind"], "CURRENT");
    assert_eq!(
        (&first["sku"], &first["version"], &first["onHand"]),
        (&json!(a), &a_now["version"], &a_now["onHand"])
    );
    assert_eq!(
        (&second["sku"], &second["version"], &second["onHand"]),
        (&json!(b), &b_now["version"], &b_now["onHand"])
    );
    let live = adjust(&app, b, "WH-EAST", 1).await;
    let event = next_event(&mut socket, "2").await;
    assert_eq!(event["kind"], "CHANGED");
    assert_eq!(event["version"], live["version"]);

    // Resubscribing with the versions just received replays nothing.
    let since = json!([
        { "sku": a, "locationId": location_id, "version": a_now["version"] },
        { "sku": b, "locationId": location_id, "version": live["version"] },
    ]);
    subscribe(
        &mut socket,
        "3",
        json!({ "skus": [a, b], "locationId": location_id, "since": since }),
    )
    .await;
    settle().await;
    let after = adjust(&app, a, "WH-EAST", 1).await;
    // Both live subscriptions hear it, once each; no CURRENT event came before.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let message = receive(&mut socket).await;
        let event = &message["payload"]["data"]["stockChanged"];
        assert_eq!(event["kind"], "CHANGED", "{message}");
        assert_eq!(event["version"], after["version"]);
        ids.push(message["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["2", "3"]);

    // A held version the database never had (the client's copy is from before a restore): the
    // current state comes back, so the terminal does not keep a stale count.
    let ahead = json!([{ "sku": a, "locationId": location_id, "version": 999_999 }]);
    subscribe(
        &mut socket,
        "4",
        json!({ "skus": [a], "locationId": location_id, "since": ahead }),
    )
    .await;
    let current = next_event(&mut socket, "4").await;
    assert_eq!(current["kind"], "CURRENT");
    assert_eq!(current["version"], after["version"]);
}

#[tokio::test]
async fn subscriptions_run_over_multipart_http() {
    let app = spawn_app().await;
    let token = app.token("web", Role::Admin, None, None);
    let http = reqwest::Client::new();
    let mut response = http
        .post(format!("{}/graphql", app.gateway.url()))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header(
            "accept",
            "multipart/mixed;boundary=\"graphql\";subscriptionSpec=\"1.0\",application/json",
        )
        .body(json!({ "query": WATCH, "variables": { "skus": [SKU] } }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("multipart/mixed"),
        "{content_type}"
    );
    assert!(content_type.contains("subscriptionSpec"), "{content_type}");
    settle().await;
    let level = adjust(&app, SKU, "WH-EAST", 4).await;
    let mut text = String::new();
    let event = loop {
        let chunk = tokio::time::timeout(WAIT, response.chunk())
            .await
            .expect("a part within the wait")
            .unwrap()
            .expect("the stream is open");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        let payload = text
            .split("\r\n--graphql")
            .filter_map(|part| part.split_once("\r\n\r\n").map(|(_, body)| body))
            .filter_map(|body| serde_json::from_str::<Value>(body).ok())
            .find(|body| body.get("payload").is_some());
        if let Some(payload) = payload {
            break payload;
        }
    };
    assert!(text.contains("Content-Type: application/json"), "{text}");
    // The part is closed by the next delimiter as it is sent: Apollo Client and Relay's
    // fetcher hand a part over only then (not at the next heartbeat).
    assert!(text.starts_with("\r\n--graphql\r\n"), "{text:?}");
    assert!(text.ends_with("}}\r\n--graphql"), "{text:?}");
    let event = &event["payload"]["data"]["stockChanged"];
    assert_eq!(event["onHand"], level["onHand"]);
    assert_eq!(event["version"], level["version"]);

    // A subscription over plain JSON is a request error that says how to send it; a query
    // with both accepted is answered in JSON.
    let client = Client::new(app.gateway.url()).token(token.clone());
    let refused = client.query(WATCH, json!({ "skus": [SKU] })).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.error_codes(), ["BAD_REQUEST"]);
    let query = http
        .post(format!("{}/graphql", app.gateway.url()))
        .header("content-type", "application/json")
        .header("accept", "multipart/mixed, application/json")
        .body(json!({ "query": "{ channel { code } }" }).to_string())
        .send()
        .await
        .unwrap();
    assert!(
        query.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
}

#[tokio::test]
async fn a_change_through_one_gateway_reaches_a_subscriber_of_the_other() {
    let Some(redis) = e2e::cluster_redis_url() else {
        return;
    };
    let (a, b) = e2e::spawn_pair(redis.clone(), redis, |_| {}).await;
    assert!(a.database_url.starts_with("postgres"), "{}", a.database_url);

    let mut on_b = connected(&b, &b.token("web", Role::Admin, None, None)).await;
    subscribe(&mut on_b, "1", json!({ "skus": [SKU] })).await;
    settle().await;
    let level = adjust(&a, SKU, "WH-EAST", -3).await;
    let event = next_event(&mut on_b, "1").await;
    assert_eq!(event["kind"], "CHANGED");
    assert_eq!(event["onHand"], level["onHand"]);
    assert_eq!(event["version"], level["version"]);
    // Once: the next event is the next change.
    let again = adjust(&a, SKU, "WH-EAST", 1).await;
    assert_eq!(
        next_event(&mut on_b, "1").await["version"],
        again["version"]
    );
}

#[tokio::test]
async fn subscribers_survive_a_redis_outage_and_are_told_to_refetch() {
    let Some(redis) = e2e::cluster_redis_url() else {
        return;
    };
    let proxy = RedisProxy::to(&redis).await;
    // B reaches Redis through the proxy.
    let (a, b) = e2e::spawn_pair(redis, proxy.url.clone(), |_| {}).await;
    let mut on_b = connected(&b, &b.token("web", Role::Admin, None, None)).await;
    subscribe(&mut on_b, "1", json!({ "skus": [SKU] })).await;
    settle().await;
    adjust(&a, SKU, "WH-EAST", 1).await;
    assert_eq!(next_event(&mut on_b, "1").await["kind"], "CHANGED");

    // Redis goes away for B: a change through A cannot reach it, B keeps serving.
    proxy.take_down();
    adjust(&a, SKU, "WH-EAST", 1).await;
    let local = adjust(&b, SKU, "WH-EAST", 1).await;
    let event = next_event(&mut on_b, "1").await;
    assert_eq!(
        (event["kind"].as_str(), &event["version"]),
        (Some("CHANGED"), &local["version"]),
        "B's own changes still reach its subscribers"
    );

    // Redis comes back: B's subscriber is told to refetch, then hears A again.
    proxy.bring_back();
    let refetch = next_event_within(&mut on_b, "1", Duration::from_secs(20)).await;
    assert_eq!(refetch["kind"], "REFETCH", "{refetch}");
    let after = adjust(&a, SKU, "WH-EAST", 1).await;
    let event = next_event(&mut on_b, "1").await;
    assert_eq!(event["kind"], "CHANGED");
    assert_eq!(event["version"], after["version"]);
}

/// Like [`next_event`], with a longer wait (a reconnection's backoff).
async fn next_event_within(socket: &mut Socket, id: &str, wait: Duration) -> Value {
    tokio::time::timeout(wait, next_event(socket, id))
        .await
        .unwrap_or_else(|_| panic!("an event within {wait:?}"))
}

#[tokio::test]
async fn stopping_the_server_ends_open_subscriptions() {
    let app = spawn_app().await;
    let token = app.token("web", Role::Admin, None, None);
    let mut socket = connected(&app, &token).await;
    subscribe(&mut socket, "1", json!({ "skus": [SKU] })).await;
    let mut stream = reqwest::Client::new()
        .post(format!("{}/graphql", app.gateway.url()))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("accept", "multipart/mixed")
        .body(json!({ "query": WATCH, "variables": { "skus": [SKU] } }).to_string())
        .send()
        .await
        .unwrap();
    settle().await;
    let e2e::TestApp {
        gateway, database, ..
    } = app;
    tokio::time::timeout(WAIT, gateway.stop())
        .await
        .expect("open subscriptions do not hold up the shutdown")
        .unwrap();
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1001, "{reason}");
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, stream.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        rest.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(rest.ends_with("\r\n--graphql--\r\n"), "{rest:?}");
    drop(database);
}

#[tokio::test]
async fn sockets_and_operations_have_caps() {
    let app = spawn_app_with(|config: &mut Config| {
        config.websocket.max_operations = 2;
        config.websocket.max_sockets_per_client = 3;
    })
    .await;
    let token = app.token("web", Role::Admin, None, None);
    // Legacy: restarting a running id at the cap replaces it; a third id is refused.
    let mut legacy = open(&app, "graphql-ws").await;
    send(
        &mut legacy,
        json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } }),
    )
    .await;
    assert_eq!(receive(&mut legacy).await["type"], "connection_ack");
    for id in ["s0", "s1", "s0"] {
        send(
            &mut legacy,
            json!({ "id": id, "type": "start", "payload": { "query": WATCH, "variables": { "skus": [SKU] } } }),
        )
        .await;
    }
    send(
        &mut legacy,
        json!({ "id": "s2", "type": "start", "payload": { "query": WATCH, "variables": { "skus": [SKU] } } }),
    )
    .await;
    let refused = receive(&mut legacy).await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("s2")),
        "{refused}"
    );
    assert_eq!(refused["payload"]["extensions"]["code"], "BAD_REQUEST");
    settle().await;
    let level = adjust(&app, SKU, "WH-EAST", 1).await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        let data = receive(&mut legacy).await;
        assert_eq!(
            data["payload"]["data"]["stockChanged"]["version"],
            level["version"]
        );
        heard.push(data["id"].as_str().unwrap().to_owned());
    }
    heard.sort();
    assert_eq!(heard, ["s0", "s1"], "both slots still deliver");

    // A fourth socket from the same address is refused before the upgrade: 429.
    let _second = open(&app, "graphql-transport-ws").await;
    let _third = open(&app, "graphql-transport-ws").await;
    let url = app.gateway.url().replace("http://", "ws://") + "/graphql/ws";
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
        }
        other => panic!("expected 429, got {other:?}"),
    }
    // Closing one makes room again.
    drop(legacy);
    let reopened = tokio::time::timeout(WAIT, async {
        loop {
            let url = app.gateway.url().replace("http://", "ws://") + "/graphql/ws";
            let mut request = url.into_client_request().unwrap();
            request.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static("graphql-transport-ws"),
            );
            if tokio_tungstenite::connect_async(request).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "a closed socket gives its place back");
}

#[tokio::test]
async fn a_customer_page_hears_its_order_change_status() {
    let app = spawn_app().await;
    let shopper = app.token("web", Role::Shopper, Some("shopper@example.com"), None);
    let placed = Client::new(app.gateway.url())
        .token(shopper.clone())
        .query(
            "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id routing { id } } }",
            json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }], "idempotencyKey": "watch-1",
                "shipTo": { "name": "A", "line1": "1 Main", "city": "Newark", "postalCode": "07102", "country": "US", "region": "us-east" } } }),
        )
        .await;
    let order = placed.data()["placeOrder"].clone();
    let mut socket = connected(&app, &shopper).await;
    send(
        &mut socket,
        json!({ "id": "o", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { orderStatusChanged(orderId: $id) { orderId status } }",
            "variables": { "id": order["id"] } } }),
    )
    .await;
    settle().await;
    let admin = Client::new(app.gateway.url()).token(app.token("web", Role::Admin, None, None));
    admin
        .query(
            "mutation($id: ID!) { fulfillShipment(id: $id) { status } }",
            json!({ "id": order["routing"][0]["id"] }),
        )
        .await
        .data();
    let message = receive(&mut socket).await;
    assert_eq!(message["type"], "next", "{message}");
    let event = &message["payload"]["data"]["orderStatusChanged"];
    assert_eq!(event["orderId"], order["id"]);
    assert_eq!(event["status"], "FULFILLED");

    // Another customer may not watch it.
    let other = app.token("web", Role::Shopper, Some("buyer@acme.example"), None);
    let mut socket = connected(&app, &other).await;
    send(
        &mut socket,
        json!({ "id": "x", "type": "subscribe", "payload": {
            "query": "subscription($id: ID!) { orderStatusChanged(orderId: $id) { status } }",
            "variables": { "id": order["id"] } } }),
    )
    .await;
    let refused = receive(&mut socket).await;
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND",
        "{refused}"
    );
}

#[tokio::test]
async fn every_reservation_of_orders_placed_together_reaches_a_subscriber_in_order() {
    let app = spawn_app().await;
    let mut socket = connected(&app, &app.token("web", Role::Admin, None, None)).await;
    subscribe(&mut socket, "1", json!({ "skus": [SKU] })).await;
    settle().await;
    let stocked = adjust(&app, SKU, "WH-EAST", 100).await;
    let event = next_event(&mut socket, "1").await;
    assert_eq!(event["version"], stocked["version"]);
    // Orders sent at once: on PostgreSQL most are placed in batches, whose requests are
    // answered together.
    let shopper = app.token("web", Role::Shopper, Some("shopper@example.com"), None);
    let orders = 40;
    let mut tasks = Vec::new();
    for n in 0..orders {
        let client = Client::new(app.gateway.url()).token(shopper.clone());
        tasks.push(tokio::spawn(async move {
            client
                .query(
                    "mutation($input: PlaceOrderInput!) { placeOrder(input: $input) { id } }",
                    json!({ "input": { "lines": [{ "sku": SKU, "quantity": 1 }], "idempotencyKey": format!("together-{n}"),
                        "shipTo": { "name": "A", "line1": "1 Main", "city": "Newark", "postalCode": "07102", "country": "US", "region": "us-east" } } }),
                )
                .await
                .data();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // One event per reservation, each level's versions one after another, none skipped.
    let mut last: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
    last.insert("WH-EAST".into(), stocked["version"].as_i64().unwrap());
    for _ in 0..orders {
        let event = next_event(&mut socket, "1").await;
        let location = event["location"].as_str().unwrap().to_owned();
        let version = event["version"].as_i64().unwrap();
        if let Some(before) = last.get(&location) {
            assert_eq!(
                version,
                before + 1,
                "{location}: {event} after version {before}"
            );
        }
        last.insert(location, version);
    }
}

/// A live watch (no `since`): identical ones share one execution.
const LIVE: &str = "subscription($skus: [String!]) { stockChanged(skus: $skus) { kind sku location onHand version } }";

/// The next `next` message of `id`, whole (payload with its extensions).
async fn next_message(socket: &mut Socket, id: &str) -> Value {
    let message = receive(socket).await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(message["id"], id, "{message}");
    message["payload"].clone()
}

#[tokio::test]
async fn identical_live_subscriptions_share_one_execution_and_each_gets_every_event() {
    let app = spawn_app().await;
    let token = app.token("web", Role::Admin, None, None);
    let mut sockets = Vec::new();
    for n in 0..3 {
        let mut socket = connected(&app, &token).await;
        send(
            &mut socket,
            json!({ "id": format!("s{n}"), "type": "subscribe", "payload": { "query": LIVE, "variables": { "skus": [SKU] } } }),
        )
        .await;
        sockets.push(socket);
    }
    // Another document (`since` declared, not given: still live) has an execution of its own.
    let mut own = connected(&app, &token).await;
    subscribe(&mut own, "own", json!({ "skus": [SKU] })).await;
    settle().await;
    assert_eq!(
        app.gateway.state.fanout.hubs(),
        2,
        "one execution per document"
    );

    let level = adjust(&app, SKU, "WH-EAST", -2).await;
    for (n, socket) in sockets.iter_mut().enumerate() {
        let payload = next_message(socket, &format!("s{n}")).await;
        let event = &payload["data"]["stockChanged"];
        assert_eq!(event["kind"], "CHANGED", "{payload}");
        assert_eq!(event["onHand"], level["onHand"]);
        assert_eq!(event["version"], level["version"]);
        // Each member's first event reports its own cost.
        let cost = &payload["extensions"]["cost"];
        assert!(
            cost["requested"].is_u64() && cost["budget"]["remaining"].is_u64(),
            "{payload}"
        );
    }
    assert_eq!(
        next_event(&mut own, "own").await["version"],
        level["version"]
    );
    let again = adjust(&app, SKU, "WH-EAST", 1).await;
    for (n, socket) in sockets.iter_mut().enumerate() {
        let payload = next_message(socket, &format!("s{n}")).await;
        assert_eq!(payload["data"]["stockChanged"]["version"], again["version"]);
        assert!(payload.get("extensions").is_none(), "{payload}");
    }

    // A member that stops leaves the others subscribed; the last one ends the execution.
    send(&mut sockets[0], json!({ "id": "s0", "type": "complete" })).await;
    let third = adjust(&app, SKU, "WH-EAST", 1).await;
    for (n, socket) in sockets.iter_mut().enumerate().skip(1) {
        let payload = next_message(socket, &format!("s{n}")).await;
        assert_eq!(payload["data"]["stockChanged"]["version"], third["version"]);
    }
    drop(sockets);
    drop(own);
    let mut waited = 0;
    while app.gateway.state.fanout.hubs() > 0 && waited < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    assert_eq!(
        app.gateway.state.fanout.hubs(),
        0,
        "the execution ended with its members"
    );
}

#[tokio::test]
async fn a_viewer_without_the_right_is_refused_even_when_others_share_the_stream() {
    let app = spawn_app().await;
    let mut admin = connected(&app, &app.token("web", Role::Admin, None, None)).await;
    send(
        &mut admin,
        json!({ "id": "a", "type": "subscribe", "payload": { "query": LIVE, "variables": { "skus": [SKU] } } }),
    )
    .await;
    settle().await;
    let shopper = app.token("web", Role::Shopper, Some("shopper@example.com"), None);
    let mut socket = connected(&app, &shopper).await;
    send(
        &mut socket,
        json!({ "id": "x", "type": "subscribe", "payload": { "query": LIVE, "variables": { "skus": [SKU] } } }),
    )
    .await;
    let message = receive(&mut socket).await;
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{message}"
    );
    assert_eq!(receive(&mut socket).await["type"], "complete");
    let level = adjust(&app, SKU, "WH-EAST", -1).await;
    assert_eq!(
        next_event(&mut admin, "a").await["version"],
        level["version"]
    );
}

#[tokio::test]
async fn pos_screens_running_the_safelisted_operation_share_it_unless_they_catch_up() {
    let app = spawn_app().await;
    let text = std::fs::read_to_string(e2e::operations_dir().join("pos/StockChanged.graphql"))
        .expect("the safelisted operation");
    let hash = gateway::shaping::persisted::sha256_hex(&text);
    let clerk = app.token("pos", Role::PosClerk, None, Some("STORE-DOWNTOWN"));
    let by_hash = |id: &str, variables: Value| {
        json!({ "id": id, "type": "subscribe", "payload": {
            "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } },
            "variables": variables } })
    };
    let mut screens = Vec::new();
    for n in 0..2 {
        let mut socket = connected(&app, &clerk).await;
        send(
            &mut socket,
            by_hash(&format!("p{n}"), json!({ "skus": [SKU] })),
        )
        .await;
        screens.push(socket);
    }
    // A screen catching up (`since`) runs on its own, and first gets its snapshot.
    let mut catching_up = connected(&app, &clerk).await;
    send(
        &mut catching_up,
        by_hash("c", json!({ "skus": [SKU], "since": [] })),
    )
    .await;
    assert_eq!(next_event(&mut catching_up, "c").await["kind"], "CURRENT");
    settle().await;
    assert_eq!(
        app.gateway.state.fanout.hubs(),
        1,
        "the two live screens share"
    );
    let level = adjust(&app, SKU, "STORE-DOWNTOWN", 2).await;
    for (n, socket) in screens.iter_mut().enumerate() {
        let event = next_event(socket, &format!("p{n}")).await;
        assert_eq!(event["version"], level["version"], "{event}");
    }
    // The catching-up screen also hears it live (after its other CURRENT levels).
    loop {
        let event = next_event(&mut catching_up, "c").await;
        if event["kind"] == "CHANGED" {
            assert_eq!(event["version"], level["version"]);
            break;
        }
        assert_eq!(event["kind"], "CURRENT", "{event}");
    }
}
