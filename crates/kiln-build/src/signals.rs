//! Ctrl-C / SIGTERM → a [`CancellationToken`].

use tokio_util::sync::CancellationToken;

/// Cancel `token` on the first SIGINT or SIGTERM; records which signal arrived.
pub fn cancel_on_signals(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let (mut int, mut term) = match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(i), Ok(t)) => (i, t),
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                    token.cancel();
                    return;
                }
            };
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
                _ = token.cancelled() => return,
            }
            token.cancel();
        }
        #[cfg(not(unix))]
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => token.cancel(),
                _ = token.cancelled() => {},
            }
        }
    })
}
