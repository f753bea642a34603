//! A starting policy: everything goes to the default pool; every response says who served it.

use sluice_sdk::prelude::*;

#[sluice_sdk::policy(on_response = on_response)]
fn decide(_req: &Request) -> Decision {
    Decision::forward_default()
}

fn on_response(_req: &Request, _resp: &Response) -> ResponseDecision {
    ResponseDecision::serve().set_header("x-policy", "{{name}}")
}
