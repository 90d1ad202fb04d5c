//! `entitlements.active_entitlement_summary.updated`: a customer's active
//! features, by their lookup keys.

use serde::Deserialize;

use super::{RawList, Reference, id_of};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntitlementSummary {
    pub customer: Option<String>,
    /// The listed features' lookup keys.
    pub features: Vec<String>,
    /// The list in the event is one page of more: the rest is read from the
    /// API (`GET /v1/entitlements/active_entitlements`) when a key is set.
    pub has_more: bool,
}

#[derive(Deserialize)]
pub(super) struct RawSummary {
    customer: Option<Reference>,
    entitlements: Option<RawList<RawEntitlement>>,
}

/// One active entitlement of a summary.
#[derive(Deserialize)]
struct RawEntitlement {
    lookup_key: Option<String>,
}

impl RawSummary {
    pub(super) fn summary(self) -> EntitlementSummary {
        let (features, has_more) = match self.entitlements {
            Some(list) => (lookup_keys(list.data), list.has_more),
            None => (Vec::new(), false),
        };
        EntitlementSummary {
            customer: id_of(self.customer),
            features,
            has_more,
        }
    }
}

fn lookup_keys(entitlements: Vec<RawEntitlement>) -> Vec<String> {
    entitlements
        .into_iter()
        .filter_map(|entitlement| entitlement.lookup_key)
        .filter(|key| !key.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::event::{Action, parse};

    #[test]
    fn a_summary_lists_lookup_keys_and_says_when_there_are_more() {
        let body = json!({ "id": "evt_1", "type": "entitlements.active_entitlement_summary.updated",
            "created": 5, "account": "acct_1",
            "data": { "object": { "object": "entitlements.active_entitlement_summary",
                "customer": "cus_1", "livemode": false,
                "entitlements": { "object": "list", "has_more": true, "url": "/v1/x", "data": [
                    { "id": "ent_1", "object": "entitlements.active_entitlement", "feature": "feat_1", "lookup_key": "export" },
                    { "id": "ent_2", "object": "entitlements.active_entitlement", "feature": "feat_2", "lookup_key": "sso" }
                ] } } } });
        let event = parse(body.to_string().as_bytes(), "username").unwrap();
        assert_eq!(event.account.as_deref(), Some("acct_1"));
        let Action::Entitlements(summary) = event.action else {
            panic!("not a summary");
        };
        assert_eq!(summary.customer.as_deref(), Some("cus_1"));
        assert_eq!(summary.features, ["export", "sso"]);
        assert!(summary.has_more);
    }
}
