//! Protocol upgrades (WebSocket and friends): after the upstream answers 101, the two
//! connections are spliced byte for byte until either side closes.

use crate::activity::Activity;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

pub(super) fn spawn_tunnel(client: OnUpgrade, upstream: OnUpgrade, activity: Activity) {
    tokio::spawn(async move {
        // Keeps the downstream connection counted as busy (idle watchdog, graceful drain).
        let _busy = activity.tunnel_started();
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
            Err(e) => tracing::debug!(error = %e, "tunnel ended with an error"),
        }
    });
}
