//! Where events come from: a consumer of the viewer's own.
//!
//! A partner's viewer asks the gateway for the chosen subject filter like any
//! other data request, so it gets its own consumer (never another consumer's
//! events), the institution's grants apply, and the gateway meters it. A
//! refused request is shown to the browser as an error, never as data.
//! An operator's viewer (facility credentials) creates a short-lived
//! consumer of its own on the chosen stream, new events only.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use lclstream_nats::protocol::naming::FACILITY_API_PREFIX;
use lclstream_nats::protocol::requests::{DatasetGrant, PullLimitsReply};
use lclstream_nats::wire::Event;
use lclstream_partner::{
    BatchInfo, DatasetRequest, EventKey, EventSink, PartnerClient, PullOptions, Start,
};
use tokio::sync::watch;

use crate::state::ViewState;

/// The browser's choice of what to watch: a subject filter.
pub type Selection = watch::Sender<String>;

/// How the viewer gets a consumer.
#[derive(Debug, Clone)]
pub enum Access {
    /// A partner institution: a data request to the gateway.
    Partner,
    /// A facility operator: a consumer of its own on this stream.
    Operator { stream: String },
}

/// Pulls the selected subject filter into the view state until dropped.
pub struct PartnerFeed {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PartnerFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PartnerFeed {
    /// Starts following `selection` (changes restart the pull on the new filter).
    pub fn start(
        partner: PartnerClient,
        access: Access,
        state: Arc<ViewState>,
        selection: watch::Receiver<String>,
    ) -> PartnerFeed {
        let task = tokio::spawn(follow(partner, access, state, selection));
        PartnerFeed { task }
    }
}

async fn follow(
    partner: PartnerClient,
    access: Access,
    state: Arc<ViewState>,
    mut selection: watch::Receiver<String>,
) {
    loop {
        let filter = selection.borrow_and_update().clone();
        state.reset(&filter);
        tokio::select! {
            outcome = watch_filter(&partner, &access, &state, &filter) => {
                if let Err(e) = outcome {
                    state.set_error(Some(e));
                }
                // Wait for another choice rather than retrying a refusal forever.
                if selection.changed().await.is_err() {
                    return;
                }
            }
            changed = selection.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Requests `filter` from the gateway (or, for an operator, makes a
/// consumer on the stream) and pulls it, new events only.
async fn watch_filter(
    partner: &PartnerClient,
    access: &Access,
    state: &Arc<ViewState>,
    filter: &str,
) -> Result<(), String> {
    let grant = match access {
        Access::Partner => {
            let request = DatasetRequest {
                filters: vec![filter.to_string()],
                start: Start::New,
                end: None,
                label: None,
            };
            partner
                .request_dataset(&request)
                .await
                .map_err(|e| format!("requesting {filter}: {e}"))?
        }
        Access::Operator { stream } => operator_consumer(partner, stream, filter).await?,
    };
    let lag = {
        let (partner, state, grant) = (partner.clone(), state.clone(), grant.clone());
        tokio::spawn(async move {
            let js = partner.jetstream(&grant.api_prefix);
            loop {
                let consumer: Result<PullConsumer, _> = js
                    .get_consumer_from_stream(&grant.consumer, &grant.stream)
                    .await;
                if let Ok(mut consumer) = consumer {
                    if let Ok(info) = consumer.info().await {
                        state.set_lag(info.num_pending);
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let options = PullOptions {
        // A viewer waits for the next event as long as it is open.
        idle_timeout: Duration::from_secs(24 * 3600),
        ..Default::default()
    };
    let mut sink = StateSink {
        state: state.clone(),
    };
    let outcome = partner.pull(&grant, &options, &mut sink).await;
    lag.abort();
    outcome
        .map(|_| ())
        .map_err(|e| format!("pulling {filter}: {e}"))
}

/// Limits of an operator viewer's consumer: a viewer shows the latest frame,
/// so a small window in flight is enough.
const OPERATOR_LIMITS: PullLimitsReply = PullLimitsReply {
    max_batch: 64,
    max_bytes: 64 << 20,
    max_ack_pending: 64,
    ack_wait_secs: 10,
    inactive_threshold_secs: 30,
};

/// A consumer of the viewer's own on `stream` (new events of `filter` only;
/// the server deletes it 30 s after the viewer stops pulling), described as
/// a grant so that it is pulled like a partner's.
async fn operator_consumer(
    partner: &PartnerClient,
    stream: &str,
    filter: &str,
) -> Result<DatasetGrant, String> {
    let js = partner.jetstream(FACILITY_API_PREFIX);
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|e| format!("stream {stream}: {e}"))?;
    // A unique token: the last one of a fresh inbox subject.
    let inbox = partner.client().new_inbox();
    let name = format!("view-{}", inbox.rsplit('.').next().unwrap_or("0"));
    let limits = OPERATOR_LIMITS;
    handle
        .create_consumer(pull::Config {
            name: Some(name.clone()),
            filter_subject: filter.to_string(),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(limits.ack_wait_secs),
            max_ack_pending: limits.max_ack_pending,
            max_batch: limits.max_batch,
            max_bytes: limits.max_bytes,
            inactive_threshold: Duration::from_secs(limits.inactive_threshold_secs),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("a consumer of {filter} on {stream}: {e}"))?;
    Ok(DatasetGrant {
        consumer: name,
        stream: stream.to_string(),
        filters: vec![filter.to_string()],
        start: Start::New,
        end: None,
        label: None,
        resumed: false,
        num_pending: 0,
        num_ack_pending: 0,
        pull: limits,
        notices: String::new(),
        notices_key: None,
        api_prefix: FACILITY_API_PREFIX.to_string(),
    })
}

/// Hands every batch to the view state; the viewer keeps no event log, so
/// nothing counts as already seen.
struct StateSink {
    state: Arc<ViewState>,
}

impl EventSink for StateSink {
    fn contains(&self, _: &EventKey) -> bool {
        false
    }

    fn write(&mut self, batch: &BatchInfo, events: Vec<Event>) -> anyhow::Result<()> {
        self.state.ingest(&events, batch.wire_bytes);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
