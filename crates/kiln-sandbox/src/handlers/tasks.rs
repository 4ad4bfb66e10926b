//! Task endpoints (`/nodes/{node}/tasks`): the task list, a task's status and its log. (Task
//! bookkeeping itself is `crate::tasks`.)

use crate::api::{ApiError, ApiResult, Params, Reply};
use crate::server::State;
use crate::tasks::{parse_upid, Tasks};
use serde_json::{json, Value};
use std::sync::Arc;

fn find_task(
    st: &State,
    p: &Params,
) -> Result<Arc<std::sync::Mutex<crate::tasks::Task>>, ApiError> {
    let upid = p.string("upid");
    if parse_upid(&upid).is_none() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    st.tasks
        .find(&upid)
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

/// `GET /nodes/{node}/tasks`: the task list, filtered and paged.
pub(super) fn task_list(st: &State, p: &Params) -> ApiResult {
    let errors = p.flag("errors");
    let mut list = st
        .tasks
        .list_json(p.str("vmid"), p.str("typefilter"), errors);
    let total = list.len();
    let start = p.int("start").unwrap_or(0).max(0) as usize;
    let limit = p.int("limit").unwrap_or(50).max(0) as usize;
    list = list.into_iter().skip(start).take(limit).collect();
    Ok(Reply {
        data: json!(list),
        extra: vec![("total".into(), json!(total))],
    })
}

/// `GET /nodes/{node}/tasks/{upid}`.
pub(super) fn task_index(st: &State, p: &Params) -> ApiResult {
    find_task(st, p)?;
    Ok(Reply::data(json!([{"name": "log"}, {"name": "status"}])))
}

/// `DELETE /nodes/{node}/tasks/{upid}`.
pub(super) fn task_delete(st: &State, p: &Params) -> ApiResult {
    find_task(st, p)?;
    Ok(Reply::null())
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
pub(super) fn task_status(st: &State, p: &Params) -> ApiResult {
    let t = find_task(st, p)?;
    let t = t
        .lock()
        .map_err(|_| ApiError::e500("task state poisoned"))?;
    Ok(Reply::data(Tasks::status_json(&t)))
}

/// `GET /nodes/{node}/tasks/{upid}/log`: log lines, paged.
pub(super) fn task_log(st: &State, p: &Params) -> ApiResult {
    let t = find_task(st, p)?;
    let t = t
        .lock()
        .map_err(|_| ApiError::e500("task state poisoned"))?;
    let start = p.int("start").unwrap_or(0).max(0) as usize;
    let limit = p.int("limit").unwrap_or(50).max(0) as usize;
    let lines: Vec<Value> = t
        .log
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(i, l)| json!({"n": i + 1, "t": l}))
        .collect();
    Ok(Reply {
        data: json!(lines),
        extra: vec![("total".into(), json!(t.log.len()))],
    })
}
