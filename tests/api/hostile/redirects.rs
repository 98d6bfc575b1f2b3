//! A callback that answers verification with a redirect to a private address: the hub does not follow it.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::{
    helpers::{eventually, spawn_app},
    receiver::Receiver,
};

/// A server on 127.0.0.1 answering every request with `302 Found` to `location`; counts the requests.
async fn redirector(location: String) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let location = location.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 8192];
                let _ = socket.read(&mut buffer).await;
                let reply = format!(
                    "HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = socket.write_all(reply.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (base, hits)
}

#[tokio::test]
async fn a_verification_answered_with_a_redirect_to_a_private_address_is_not_followed_and_nothing_becomes_active() {
    let app = spawn_app().await; // private callbacks allowed, so the hub reaches the redirector on 127.0.0.1
    let target = Receiver::start().await;
    let (redirector, hits) = redirector(format!("{}/metadata?hub.challenge=x", target.base)).await;
    let callback = format!("{redirector}/callback");
    let response =
        app.post_form(&[("hub.mode", "subscribe"), ("hub.topic", "redirect.topic"), ("hub.callback", &callback)]).await;
    assert_eq!(response.status().as_u16(), 202);
    eventually(Duration::from_secs(10), "the verification request", || {
        let hits = hits.clone();
        async move { (hits.load(Ordering::SeqCst) > 0).then_some(()) }
    })
    .await;
    let pool = app.pool.clone();
    eventually(Duration::from_secs(10), "the verification to be settled", || {
        let pool = pool.clone();
        async move {
            let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM subscription_requests WHERE state = 'pending'")
                .fetch_one(&pool)
                .await
                .unwrap();
            (pending == 0).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let active: i64 = sqlx::query_scalar("SELECT count(*) FROM subscriptions WHERE state = 'active'")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(active, 0, "a redirected verification must not activate the subscription");
    assert!(target.received().is_empty(), "the redirect target was called: {:?}", target.received());
    app.stop().await;
}
