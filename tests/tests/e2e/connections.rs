//! Connections and bodies under attack, over raw sockets: half-sent requests and idle
//! keep-alive connections are closed by their timeouts, a connection cap does not lock out
//! requests, and bodies over the limit are refused without waiting for them.

use std::time::Duration;

use e2e::{Client, StatusCode, TestApp, spawn_app_with};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far longer than any timeout under test: a read that waits this long has hung.
const PATIENCE: Duration = Duration::from_secs(20);

async fn tight_app(max_connections: usize) -> TestApp {
    spawn_app_with(|config| {
        config.http.header_read_timeout_secs = 1;
        config.http.keep_alive_idle_secs = 2;
        config.http.max_connections = max_connections;
        config.http.max_body_bytes = 1024;
    })
    .await
}

/// Waits for the server to close the connection: the read ends with EOF.
async fn assert_closed_by_server(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(PATIENCE, stream.read(&mut buf)).await {
        Err(_) => panic!("{what}: the server kept the connection open"),
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            let text = String::from_utf8_lossy(&buf[..n]);
            panic!("{what}: the server sent {text:?} instead of closing");
        }
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(Err(err)) => panic!("{what}: {err}"),
    }
}

/// One HTTP/1.1 response read off a raw socket: status and JSON body (by `Content-Length`).
async fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("a response arrives")
            .expect("the socket reads");
        assert!(n > 0, "closed before a response: {received:?}");
        received.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let length: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .expect("a Content-Length");
    while received.len() < head_end + length {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the body arrives")
            .expect("the socket reads");
        assert!(n > 0, "closed inside the body");
        received.extend_from_slice(&buf[..n]);
    }
    (status, head, received[head_end..head_end + length].to_vec())
}

async fn healthz_answers(app: &TestApp) {
    let response = app
        .client
        .get(format!("{}/healthz", app.gateway.url()))
        .timeout(PATIENCE)
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_half_sent_request_is_closed_after_the_header_read_timeout() {
    let app = tight_app(100).await;
    let mut silent = TcpStream::connect(app.gateway.addr).await.unwrap();
    let mut half_line = TcpStream::connect(app.gateway.addr).await.unwrap();
    half_line.write_all(b"GET /heal").await.unwrap();
    let mut half_headers = TcpStream::connect(app.gateway.addr).await.unwrap();
    half_headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow")
        .await
        .unwrap();
    assert_closed_by_server(&mut silent, "a connection that sent nothing").await;
    assert_closed_by_server(&mut half_line, "half a request line").await;
    assert_closed_by_server(&mut half_headers, "half the headers").await;
    healthz_answers(&app).await;
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let app = tight_app(100).await;
    let mut stream = TcpStream::connect(app.gateway.addr).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (status, head, _) = read_response(&mut stream).await;
        assert_eq!(status, 200, "{head}");
    }
    assert_closed_by_server(&mut stream, "an idle keep-alive connection").await;
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn idle_connections_at_the_cap_do_not_lock_out_a_request() {
    let app = tight_app(3).await;
    let mut idle = Vec::new();
    for i in 0..20 {
        let mut stream = TcpStream::connect(app.gateway.addr).await.unwrap();
        if i % 2 == 0 {
            stream.write_all(b"POST /graph").await.unwrap();
        }
        idle.push(stream);
    }
    healthz_answers(&app).await;
    let reply = Client::new(app.gateway.url())
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(reply.data()["channel"]["code"], "web");
    for (i, stream) in idle.iter_mut().enumerate() {
        assert_closed_by_server(stream, &format!("idle connection {i}")).await;
    }
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_without_waiting_for_them() {
    let app = tight_app(100).await;

    // Declared too large, and never sent: refused from the headers alone.
    let mut stream = TcpStream::connect(app.gateway.addr).await.unwrap();
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 10485760\r\n\r\n",
        )
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("http.max_body_bytes")),
        "{body}"
    );

    // The body sent after all is read and discarded, then the connection is closed cleanly
    // (a reset could destroy the answer before the client reads it).
    stream
        .write_all(&vec![b' '; 10_485_760])
        .await
        .expect("the server reads what the client still sends");
    let mut rest = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut rest))
        .await
        .expect("the server closes the connection");
    assert_eq!(read.expect("a clean close, not a reset"), 0);

    // Declared too large and sent anyway: the client, still sending, gets the answer.
    for _ in 0..5 {
        let reply = Client::new(app.gateway.url())
            .post_raw("application/json", " ".repeat(4 * 1024 * 1024))
            .await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reply.error_codes(), ["BAD_REQUEST"]);
    }

    // Chunked, and growing past the limit: refused once it passes it, though it never ends.
    let mut stream = TcpStream::connect(app.gateway.addr).await.unwrap();
    stream
        .write_all(
            b"POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .await
        .unwrap();
    let chunk = format!("200\r\n{}\r\n", " ".repeat(0x200));
    for _ in 0..3 {
        stream.write_all(chunk.as_bytes()).await.unwrap();
    }
    let (status, head, body) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{head}");
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );

    // A body within the limit is still served.
    let reply = Client::new(app.gateway.url())
        .query("{ channel { code } }", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.data()["channel"]["code"], "web");
    app.gateway.stop().await.unwrap();
}

#[tokio::test]
async fn stop_closes_waiting_connections_and_drains_a_request_in_flight() {
    let app = spawn_app_with(|config| {
        config.http.header_read_timeout_secs = 3600;
        config.http.keep_alive_idle_secs = 3600;
    })
    .await;
    let addr = app.gateway.addr;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut idle).await.0, 200);
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(b"GET /hea").await.unwrap();

    // In flight: the handler is reading the body (the server asked for it with 100 Continue).
    let body = br#"{"query":"{ channel { code } }"}"#;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(
        format!(
            "POST /graphql HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, busy.read(&mut buf))
        .await
        .expect("100 Continue arrives")
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 100"), "{:?}", &buf[..n]);

    let TestApp {
        gateway, database, ..
    } = app;
    let stopping = tokio::spawn(gateway.stop());
    assert_closed_by_server(&mut idle, "an idle connection at stop").await;
    assert_closed_by_server(&mut silent, "a connection sending headers at stop").await;
    assert!(
        !stopping.is_finished(),
        "stop waits for the request in flight"
    );
    busy.write_all(body).await.unwrap();
    let (status, head, body) = read_response(&mut busy).await;
    assert_eq!(status, 200, "{head}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["data"]["channel"]["code"], "web", "{body}");
    assert_closed_by_server(&mut busy, "the drained connection").await;
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .expect("stop returns once drained")
        .unwrap()
        .expect("a clean stop");
    drop(database);
}
