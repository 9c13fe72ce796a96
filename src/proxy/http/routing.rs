//! Which route a canonical path goes to, and which allow-lists it must pass.

use super::path;
use crate::authz::{self, Decision};
use crate::plan::{Listener, Route};
use crate::proxy::ConnCtx;

fn scope(r: &Route) -> String {
    format!(
        "route {}",
        if r.prefix.is_empty() { "/" } else { &r.prefix }
    )
}

/// The route for `path` (the longest prefix on a segment boundary) and the
/// policy decision. Allow-lists that apply: the listener's, the chosen
/// route's, and those of every route whose prefix `path` starts with as a
/// string but not on a segment boundary (`/orders.json`, `/ordersx` next to
/// `/orders`): such a path goes to another upstream, but a backend that
/// matches prefixes as strings (nginx `location /orders`) or strips suffixes
/// (`.json`) would serve it from the guarded route.
pub(super) fn route<'a>(
    cx: &ConnCtx<'_>,
    listener: &'a Listener,
    path: &str,
) -> (Option<&'a Route>, Decision) {
    let key = path::route_key(path, cx.listener.cfg.http.allow_path_params);
    let routes = &listener.routes;
    let chosen = routes
        .iter()
        .filter(|r| path::under_prefix(&key, &r.prefix, r.case_insensitive))
        .max_by_key(|r| r.prefix.len());
    let peer = cx.peer_id();
    let mut decision = authz::decide(listener.cfg.allow.as_ref(), peer, || "listener".into());
    if let Some(r) = chosen {
        if decision == Decision::Allow {
            decision = authz::decide(r.allow.as_ref(), peer, || scope(r));
        }
    }
    for r in routes.iter().filter(|r| r.allow.is_some()) {
        if decision != Decision::Allow {
            break;
        }
        if path::string_prefix(&key, &r.prefix, r.case_insensitive)
            && !path::under_prefix(&key, &r.prefix, r.case_insensitive)
        {
            decision = authz::decide(r.allow.as_ref(), peer, || scope(r));
        }
    }
    (chosen, decision)
}
