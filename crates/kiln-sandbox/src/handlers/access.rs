//! `/access`: ticket creation (login) and the permissions of the calling identity. (The privilege
//! model itself is `crate::access`.)

use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::server::{Ctx, State};
use serde_json::json;
use std::sync::Arc;

pub(super) async fn create_ticket(st: &Arc<State>, p: Params) -> ApiResult {
    match st
        .auth
        .login(&p.string("username"), p.str("realm"), &p.string("password"))
    {
        Some(user) => Ok(Reply::data(json!({
            "username": user,
            "ticket": st.auth.make_ticket(&user),
            "CSRFPreventionToken": st.auth.csrf_token(&user),
            "cap": {
                "vms": {"VM.Allocate": 1, "VM.Config.Disk": 1, "VM.Config.CDROM": 1, "VM.Config.CPU": 1,
                        "VM.Config.Memory": 1, "VM.Config.Network": 1, "VM.Config.HWType": 1,
                        "VM.Config.Options": 1, "VM.Config.Cloudinit": 1, "VM.PowerMgmt": 1, "VM.Console": 1,
                        "VM.Audit": 1, "VM.Clone": 1, "VM.GuestAgent.Audit": 1, "VM.GuestAgent.Unrestricted": 1},
                "storage": {"Datastore.Allocate": 1, "Datastore.AllocateSpace": 1,
                            "Datastore.AllocateTemplate": 1, "Datastore.Audit": 1},
                "nodes": {"Sys.Audit": 1, "Sys.Modify": 1, "Sys.PowerMgmt": 1, "Sys.Console": 1},
                "access": {"User.Modify": 1, "Permissions.Modify": 1},
                "dc": {"Sys.Audit": 1, "SDN.Use": 1},
                "sdn": {"SDN.Use": 1},
                "mapping": {}
            }
        }))),
        None => {
            if !st.cfg.auth_failure_delay.is_zero() {
                tokio::time::sleep(st.cfg.auth_failure_delay).await;
            }
            Err(ApiError::Status(401, "authentication failure".to_string()))
        }
    }
}

/// `GET /access/permissions`.
pub(super) fn permissions(st: &State, ctx: &Ctx, p: &Params) -> ApiResult {
    Ok(Reply::data(
        st.cfg.privileges.permissions_reply(&ctx.ident, p)?,
    ))
}
