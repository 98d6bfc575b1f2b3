//! Size limits on what a request may carry: the body (TIDINGS_MAX_BODY_BYTES) and the headers.

use super::{hostile_hub, stored_rows, PUBLISH_TOKEN};

#[tokio::test]
async fn oversized_headers_and_bodies_are_refused_before_anything_is_stored() {
    let app = hostile_hub().await;
    let before = stored_rows(&app.pool).await;
    let event = serde_json::json!({"topic": "limits.topic", "body": 1}).to_string();
    for (name, size) in [("one header of 256 KiB", 256 * 1024), ("one header of 1 MiB", 1024 * 1024)] {
        let response = app
            .client
            .post(app.url("/events"))
            .bearer_auth(PUBLISH_TOKEN)
            .header("content-type", "application/json")
            .header("x-padding", "p".repeat(size))
            .body(event.clone())
            .send()
            .await;
        // The server either answers 4xx or closes the connection on a head it will not read; never 2xx.
        if let Ok(response) = response {
            assert!(response.status().is_client_error(), "{name}: answered {}", response.status());
        }
    }
    let many = (0..200).fold(app.client.post(app.url("/events")), |r, i| r.header(format!("x-h{i}"), "v"));
    let response =
        many.bearer_auth(PUBLISH_TOKEN).header("content-type", "application/json").body(event.clone()).send().await;
    if let Ok(response) = response {
        assert!(response.status().is_client_error(), "200 headers: answered {}", response.status());
    }
    let over = app.config.http.max_body_bytes as usize + 1;
    let response = app
        .client
        .post(app.url("/events/raw?topic=limits.topic"))
        .bearer_auth(PUBLISH_TOKEN)
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; over])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413, "a body one byte over the limit");
    assert_eq!(stored_rows(&app.pool).await, before);
    // Without the excess, the same event is accepted: the refusals above were about size alone.
    let response = app
        .client
        .post(app.url("/events"))
        .bearer_auth(PUBLISH_TOKEN)
        .header("content-type", "application/json")
        .body(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    app.stop().await;
}
