//! Ctrl-C / SIGTERM / SIGHUP → a [`CancellationToken`].
//!
//! The first signal cancels the builds (each unwinds its cleanup stack; the command exits 130).
//! A second signal while the cleanup runs stops waiting: it prints what may be left behind
//! (from [`crate::leftovers`], with the command that removes each) and exits 130 at once.

use tokio_util::sync::CancellationToken;

/// Exit code after an interrupt (128 + SIGINT), as the rest of the CLI uses.
pub const INTERRUPTED: i32 = 130;

/// The text printed when a second signal stops the cleanup.
pub fn second_signal_message(left: &[String]) -> String {
    let mut s = String::from(
        "==> Second interrupt: stopping now without waiting for the cleanup to finish.\n",
    );
    if left.is_empty() {
        s.push_str("==> Nothing kiln created is known to be left behind.\n");
    } else {
        s.push_str("==> These may be left behind; remove them by hand:\n");
        for l in left {
            s.push_str(&format!("-->   {l}\n"));
        }
    }
    s
}

/// Cancel `token` on the first SIGINT, SIGTERM or SIGHUP; on a second one, print what may be
/// left behind and exit 130.
pub fn cancel_on_signals(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (mut int, mut term, mut hup) = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(i), Ok(t), Ok(h)) => (i, t, h),
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    token.cancel();
                    return;
                }
            };
            let name = tokio::select! {
                _ = int.recv() => "interrupt",
                _ = term.recv() => "SIGTERM",
                _ = hup.recv() => "SIGHUP",
                _ = token.cancelled() => return,
            };
            tracing::debug!(signal = name, "cancelling the builds");
            if name != "interrupt" {
                eprintln!("==> Received {name}: cancelling the build and cleaning up (signal again to stop waiting)");
            }
            token.cancel();
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
                _ = hup.recv() => {},
            }
            eprint!("{}", second_signal_message(&crate::leftovers::list()));
            std::process::exit(INTERRUPTED);
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => token.cancel(),
                _ = token.cancelled() => return,
            }
            let _ = tokio::signal::ctrl_c().await;
            eprint!("{}", second_signal_message(&crate::leftovers::list()));
            std::process::exit(INTERRUPTED);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_signal_lists_the_leftovers() {
        let m = second_signal_message(&["VM 100 (x): qm destroy 100 --purge".into()]);
        assert!(m.contains("may be left behind"), "{m}");
        assert!(
            m.contains("-->   VM 100 (x): qm destroy 100 --purge"),
            "{m}"
        );
        let m = second_signal_message(&[]);
        assert!(m.contains("Nothing kiln created"), "{m}");
    }
}
