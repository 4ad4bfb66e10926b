//! `provisioner "breakpoint"`: pause the build until the user presses Enter.

use kiln_config::model::Breakpoint;
use tokio::io::AsyncBufReadExt;

use super::{ProvisionContext, ProvisionError};

pub(super) async fn run(b: &Breakpoint, ctx: &ProvisionContext<'_>) -> Result<(), ProvisionError> {
    if b.disable {
        ctx.ui
            .say("Breakpoint disabled (disable = true), continuing");
        return Ok(());
    }
    let note = b.note.as_deref().unwrap_or("");
    if !ctx.interactive {
        ctx.ui.say(&format!(
            "Breakpoint {note:?}: not pausing because kiln is not attached to a terminal; continuing"
        ));
        return Ok(());
    }
    ctx.ui.say(&format!(
        "Pausing at breakpoint provisioner with note {note:?}. Press Enter to continue."
    ));
    let mut line = String::new();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin());
    tokio::select! {
        _ = ctx.cancel.cancelled() => Err(ProvisionError::Cancelled),
        r = stdin.read_line(&mut line) => {
            r.map_err(|e| ProvisionError::local("reading from the terminal", e))?;
            Ok(())
        }
    }
}
