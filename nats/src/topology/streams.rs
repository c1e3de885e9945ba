//! The copies of an instrument's stream across a topology.
//!
//! - Edge (leaf node, its own domain): `LCLS_<INSTRUMENT>` on `lcls.<instrument>.>`;
//!   the agent publishes here with `Nats-Msg-Id`, so republished batches deduplicate.
//! - Facility (hub domain): `LCLS_<INSTRUMENT>`, R3 in a 3-node cluster, sourcing
//!   every edge through `external.api = "$JS.<edge-domain>.API"`. It has no
//!   subjects of its own when edges exist: the same subjects on both sides of
//!   a leaf node link would store each publication twice.
//! - Partner (hub domain, placed in the partner cluster):
//!   `LCLS_<INSTRUMENT>_<SITE>`, a mirror of the facility stream (names are
//!   unique within a domain, hence the site suffix). Partner consumers pull here.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, External, Placement, Source};

use super::spec::{Limits, Role, StreamSpec, Topology};
use crate::streams::StreamSettings;
use crate::subjects::stream_name;

/// Name of the edge copy of an instrument's stream.
pub fn edge_stream_name(instrument: &str) -> String {
    stream_name(instrument)
}

/// Name of the facility copy of an instrument's stream.
pub fn facility_stream_name(instrument: &str) -> String {
    stream_name(instrument)
}

/// Name of a partner site's mirror of an instrument's stream.
pub fn partner_stream_name(instrument: &str, site: &str) -> String {
    format!(
        "{}_{}",
        stream_name(instrument),
        site.to_ascii_uppercase().replace('-', "_")
    )
}

/// One stream to create: where, and with which configuration.
#[derive(Debug, Clone)]
pub struct StreamPlacement {
    /// Site whose servers the stream is created through.
    pub site: String,
    /// Role of that site.
    pub role: Role,
    /// The stream configuration.
    pub config: Config,
}

fn apply_limits(config: &mut Config, limits: &Limits, site_size: usize) {
    if let Some(b) = limits.max_bytes {
        config.max_bytes = b;
    }
    if let Some(m) = limits.max_msgs {
        config.max_messages = m;
    }
    if let Some(a) = limits.max_age_secs {
        config.max_age = Duration::from_secs(a);
    }
    config.num_replicas = limits.replicas.unwrap_or(3).min(site_size).max(1);
}

impl Topology {
    /// Every stream of the topology in creation order: edges, facility, partners.
    pub fn stream_placements(&self) -> Vec<StreamPlacement> {
        let mut out = Vec::new();
        for spec in &self.streams {
            out.extend(self.placements_of(spec));
        }
        // Sources and mirrors need their origin first.
        out.sort_by_key(|p| match p.role {
            Role::Edge => 0,
            Role::Facility => 1,
            Role::Partner => 2,
        });
        out
    }

    fn placements_of(&self, spec: &StreamSpec) -> Vec<StreamPlacement> {
        let mut settings = StreamSettings::for_instrument(&spec.instrument);
        settings.duplicate_window = spec.duplicate_window();
        settings.max_message_size = self.max_payload.min(i32::MAX as usize) as i32;
        let size_of = |site: &str| self.site(site).map(|s| s.server_count()).unwrap_or(1);
        let mut out = Vec::new();
        for edge in &spec.edges {
            let mut config = settings.to_config();
            config.name = edge_stream_name(&spec.instrument);
            apply_limits(&mut config, &spec.edge_limits, 1);
            out.push(StreamPlacement {
                site: edge.clone(),
                role: Role::Edge,
                config,
            });
        }
        let facility = spec
            .facility
            .clone()
            .unwrap_or_else(|| self.facility().name.clone());
        let mut config = settings.to_config();
        config.name = facility_stream_name(&spec.instrument);
        if !spec.edges.is_empty() {
            config.subjects = Vec::new();
            config.sources = Some(
                spec.edges
                    .iter()
                    .filter_map(|e| self.site(e))
                    .map(|edge| Source {
                        name: edge_stream_name(&spec.instrument),
                        external: Some(External {
                            api_prefix: format!("$JS.{}.API", edge.edge_domain()),
                            delivery_prefix: None,
                        }),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
        config.placement = Some(Placement {
            cluster: Some(facility.clone()),
            tags: Vec::new(),
        });
        apply_limits(&mut config, &spec.facility_limits, size_of(&facility));
        out.push(StreamPlacement {
            site: facility,
            role: Role::Facility,
            config,
        });
        for partner in &spec.partners {
            let mut config = settings.to_config();
            config.name = partner_stream_name(&spec.instrument, partner);
            config.subjects = Vec::new();
            // Deduplication happened upstream; a mirror keeps the origin's messages as they are.
            config.duplicate_window = Duration::ZERO;
            config.mirror = Some(Source {
                name: facility_stream_name(&spec.instrument),
                ..Default::default()
            });
            config.placement = Some(Placement {
                cluster: Some(partner.clone()),
                tags: Vec::new(),
            });
            apply_limits(&mut config, &spec.partner_limits, size_of(partner));
            out.push(StreamPlacement {
                site: partner.clone(),
                role: Role::Partner,
                config,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_sources_edges_and_partners_mirror_the_facility() {
        let text = r#"
name = "t"
[[sites]]
name = "edge-mfx"
role = "edge"
[[sites]]
name = "fac"
role = "facility"
size = 3
[[sites]]
name = "uni-a"
role = "partner"
[[streams]]
instrument = "mfx"
edges = ["edge-mfx"]
partners = ["uni-a"]
partner_limits = { max_msgs = 1000 }
"#;
        let t = Topology::parse(text, "t").unwrap();
        let p = t.stream_placements();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].config.subjects, vec!["lcls.mfx.>".to_string()]);
        assert_eq!(p[1].config.num_replicas, 3);
        assert!(p[1].config.subjects.is_empty());
        let source = &p[1].config.sources.as_ref().unwrap()[0];
        assert_eq!(
            source.external.as_ref().unwrap().api_prefix,
            "$JS.edge-mfx.API"
        );
        assert_eq!(p[2].config.name, "LCLS_MFX_UNI_A");
        assert_eq!(p[2].config.mirror.as_ref().unwrap().name, "LCLS_MFX");
        assert_eq!(p[2].config.max_messages, 1000);
        assert_eq!(p[2].config.num_replicas, 1);
    }
}
