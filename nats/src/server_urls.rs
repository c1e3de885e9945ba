//! Server URL lists as operators write them: one URL, or several separated
//! by commas (`nats://fac-1:4222,nats://fac-2:4222`, as rendered gateway
//! configurations list a site's servers). async-nats parses a string as one
//! URL, so every connection of ours goes through [`server_urls`].

/// The URLs of a comma-separated list, trimmed, empty entries dropped. A
/// list with no URL at all is returned as is, so that connecting names it in
/// its error.
pub fn server_urls(list: &str) -> Vec<String> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        vec![list.to_string()]
    } else {
        urls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_trims_and_keeps_one_url_as_is() {
        assert_eq!(server_urls("nats://a:4222"), vec!["nats://a:4222"]);
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4223,,"),
            vec!["nats://a:4222", "nats://b:4223"]
        );
        assert_eq!(server_urls(""), vec![""]);
    }

    #[tokio::test]
    async fn async_nats_accepts_the_split_list() {
        use async_nats::ToServerAddrs;
        let addrs: Vec<_> = server_urls("nats://127.0.0.1:1,nats://127.0.0.1:2")
            .to_server_addrs()
            .unwrap()
            .collect();
        assert_eq!(addrs.len(), 2);
        // The unsplit list is what async-nats refuses.
        assert!("nats://127.0.0.1:1,nats://127.0.0.1:2"
            .to_server_addrs()
            .is_err());
    }
}
