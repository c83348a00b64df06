//! How an error that reached `main` is told to the user: each cause once, then advice.
//!
//! Why causes repeat: a leaf error such as `TargetError::Io` displays as "{path}: {source}"
//! *and* returns the io::Error as its `source()`, as do several other typed errors; anyhow's
//! `{:#}` then prints the whole chain, so the OS error's text came out twice ("Permission
//! denied (os error 13): Permission denied (os error 13)"). And a context that names the same
//! object as the layer below it ("reading --from X" over "reading X: ...") named the path
//! twice. [`render`] walks the chain once and drops every cause whose text the layer above
//! already contains, and the layer-below's repeat of a context's own words. Then [`hint`]
//! adds one line of advice for the errors a user can act on: not root, no network.
//!
//! Also [`is_broken_pipe`]: a reader that closed its end (`pifw ... | head -1`) is not an
//! error worth a word.

use crate::fetch::FetchError;

/// True when the error is a write to a closed pipe, however it was wrapped.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// The error as one line: the causes joined by ": ", each said once.
pub fn render(e: &anyhow::Error) -> String {
    let msgs: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    join_once(&msgs)
}

fn join_once(msgs: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < msgs.len() {
        let mut msg = msgs[i].clone();
        if let Some(prev) = out.last() {
            // "reading --from X" over "reading X: cause": keep the outer words, drop their
            // repeat at the start of the inner message.
            let bare = without_flags(prev);
            if let Some(rest) = msg.strip_prefix(bare.as_str()) {
                if rest.is_empty() {
                    i += 1;
                    continue;
                }
                if let Some(rest) = rest.strip_prefix(": ") {
                    msg = rest.to_string();
                }
            }
        }
        // Skip every later cause this message already ends with (its own `{source}`), and
        // the layers between: their text is inside this one.
        let mut next = i + 1;
        for (j, later) in msgs.iter().enumerate().skip(i + 1) {
            if !later.is_empty() && msg.ends_with(later.as_str()) {
                next = j + 1;
            }
        }
        out.push(msg);
        i = next;
    }
    out.join(": ")
}

/// `text` without its `--option` words: "reading --from X" -> "reading X".
fn without_flags(text: &str) -> String {
    text.split(' ')
        .filter(|w| !w.starts_with("--"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line of advice for errors the user can do something about.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    let denied = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || c.downcast_ref::<nix::errno::Errno>()
                .is_some_and(|n| matches!(n, nix::errno::Errno::EACCES | nix::errno::Errno::EPERM))
    });
    if denied && !nix::unistd::geteuid().is_root() {
        return Some("run with sudo: reading and writing a card's device needs root");
    }
    if e.chain()
        .filter_map(|c| c.downcast_ref::<FetchError>())
        .any(is_network)
    {
        return Some(
            "work offline: --from PATH takes the files from a download made elsewhere (a .deb, .zip or directory), --offline uses only pifw's cache",
        );
    }
    None
}

fn is_network(e: &FetchError) -> bool {
    match e {
        FetchError::Network { .. } | FetchError::Timeout { .. } | FetchError::Truncated { .. } => {
            true
        }
        FetchError::AllSourcesFailed { errors, .. } => errors.iter().any(is_network),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_os_error_is_said_once() {
        let os = "Permission denied (os error 13)";
        let msgs = s(&[&format!("/tmp/x.img: {os}"), os]);
        assert_eq!(join_once(&msgs), format!("/tmp/x.img: {os}"));
    }

    #[test]
    fn the_path_is_said_once() {
        let os = "No such file or directory (os error 2)";
        let msgs = s(&[
            "reading --from /tmp/x.deb",
            &format!("reading /tmp/x.deb: {os}"),
            os,
        ]);
        assert_eq!(join_once(&msgs), format!("reading --from /tmp/x.deb: {os}"));
    }

    #[test]
    fn contexts_and_a_cause_chain_are_kept() {
        let msgs = s(&[
            "checking the firmware partition",
            "the FAT loops",
            "at cluster 5",
        ]);
        assert_eq!(
            join_once(&msgs),
            "checking the firmware partition: the FAT loops: at cluster 5"
        );
    }

    #[test]
    fn a_layer_holding_the_root_cause_skips_the_layers_between() {
        let msgs = s(&[
            "obtaining u-boot",
            "http://h/x.deb: dns error: no such host",
            "error sending request for url (http://h/x.deb)",
            "client error (Connect)",
            "dns error: no such host",
        ]);
        assert_eq!(
            join_once(&msgs),
            "obtaining u-boot: http://h/x.deb: dns error: no such host"
        );
    }

    #[test]
    fn broken_pipe_through_serde_json() {
        let io = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        let e = anyhow::Error::new(serde_json::Error::io(io)).context("printing");
        assert!(is_broken_pipe(&e));
        let other = anyhow::anyhow!("something else");
        assert!(!is_broken_pipe(&other));
    }
}
