//! A stalled sender: the headers of a large POST /audit, then a byte now and then — a slow
//! loris against the webhook, bounded in bytes and time, stopping by itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// The most bytes a trickler sends after its headers (it stops by itself).
pub const MAX_TRICKLE: usize = 60;

/// The headers of a POST /audit announcing `length` body bytes.
pub fn headers(length: usize) -> String {
    format!(
        "POST /audit HTTP/1.1\r\nHost: klaxon\r\nContent-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    )
}

/// One stalled sender: the headers of a large POST, then one byte per `every` until `stop`
/// turns true, the server answers, or [`MAX_TRICKLE`] bytes went out. Returns the status
/// line of the server's answer, if one came.
pub async fn trickle(addr: SocketAddr, every: Duration, mut stop: watch::Receiver<bool>) -> String {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(headers(1 << 20).as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut tick = tokio::time::interval(every);
    let mut sent = 0;
    loop {
        let mut chunk = [0u8; 1024];
        tokio::select! {
            () = until_stopped(&mut stop) => break,
            read = reader.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    answer.extend_from_slice(&chunk[..n]);
                    if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            },
            _ = tick.tick(), if sent < MAX_TRICKLE => {
                if writer.write_all(b" ").await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    text.lines().next().unwrap_or_default().to_owned()
}

/// Completes once `stop` turns true (or its sender is gone).
pub async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
