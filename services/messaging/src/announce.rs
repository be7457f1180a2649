//! Every `messaging.stream_announce_secs`, re-announce the Listen streams this instance holds
//! (`messaging.streams.<instance>`) with a lease of three intervals, and drop the expired
//! entries of the other instances' streams ([`crate::remote`]). Runs on real time: see there.

use std::sync::Arc;
use std::time::Duration;

use guardyn_common::events::Payload as _;
use guardyn_common::events::messaging::{StreamAnnounce, streams_subject};

use crate::core::Core;

/// Streams per announcement (about 55 bytes each on the wire), well below the bus's payload
/// limit.
const CHUNK: usize = 2_000;

/// How long announced streams (and claims) count: three announcement intervals, so one lost
/// announcement does not make a device look offline.
pub(crate) fn lease(announce_secs: u64) -> Duration {
    Duration::from_secs(announce_secs.saturating_mul(3))
}

pub(crate) async fn run(core: Arc<Core>) {
    let every = Duration::from_secs(core.cfg.stream_announce_secs);
    let lease_ms =
        u64::try_from(lease(core.cfg.stream_announce_secs).as_millis()).unwrap_or(u64::MAX);
    let subject = streams_subject(core.registry.instance);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = core.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        core.remote.prune();
        let open = core.registry.open_streams();
        for chunk in open.chunks(CHUNK) {
            let announce = StreamAnnounce {
                instance: core.registry.instance,
                lease_ms,
                streams: chunk.to_vec(),
            };
            if let Err(e) = core.bus.publish(&subject, announce.encode()).await {
                // The next round renews the leases; until then the streams count as claimed.
                tracing::warn!(error = %e, "could not announce the open Listen streams");
                break;
            }
        }
    }
}
