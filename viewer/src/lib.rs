//! `lclstream view`: a small HTTP server that shows a stream as it arrives.
//!
//! Data flows one way: a [`feed`] pulls events (as a partner, through the
//! gateway, on its own consumer) into the bounded [`state::ViewState`]; the
//! [`http`] server renders snapshots of that state for browsers. A slow
//! browser never holds events back: it only ever sees the latest frame and
//! fixed-size trend and rate windows.

pub mod feed;
pub mod frame;
pub mod http;
pub mod state;

pub use feed::{PartnerFeed, Selection};
pub use http::{serve, ViewerHandle};
pub use state::ViewState;
