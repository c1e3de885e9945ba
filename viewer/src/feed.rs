//! Where events come from: a partner's own consumer, granted by the gateway.
//!
//! The viewer asks the gateway for the chosen subject filter like any other
//! data request, so it gets its own consumer (never another consumer's
//! events), the institution's grants apply, and the gateway meters it. A
//! refused request is shown to the browser as an error, never as data.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use lclstream_nats::wire::Event;
use lclstream_partner::{
    BatchInfo, DatasetRequest, EventKey, EventSink, PartnerClient, PullOptions, Start,
};
use tokio::sync::watch;

use crate::state::ViewState;

/// The browser's choice of what to watch: a subject filter.
pub type Selection = watch::Sender<String>;

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
        state: Arc<ViewState>,
        selection: watch::Receiver<String>,
    ) -> PartnerFeed {
        let task = tokio::spawn(follow(partner, state, selection));
        PartnerFeed { task }
    }
}

async fn follow(
    partner: PartnerClient,
    state: Arc<ViewState>,
    mut selection: watch::Receiver<String>,
) {
    loop {
        let filter = selection.borrow_and_update().clone();
        state.reset(&filter);
        tokio::select! {
            outcome = watch_filter(&partner, &state, &filter) => {
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

/// Requests `filter` from the gateway and pulls it, new events only.
async fn watch_filter(
    partner: &PartnerClient,
    state: &Arc<ViewState>,
    filter: &str,
) -> Result<(), String> {
    let request = DatasetRequest {
        filters: vec![filter.to_string()],
        start: Start::New,
        end: None,
        label: None,
    };
    let grant = partner
        .request_dataset(&request)
        .await
        .map_err(|e| format!("the gateway refused {filter}: {e}"))?;
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
