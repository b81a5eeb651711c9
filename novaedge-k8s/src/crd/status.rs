//! The `status` of every NovaEdge kind.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the controller last observed about an object, as Gateway API statuses say it:
/// `metav1.Condition`s keyed by type (`Accepted`, `Programmed`, `ResolvedRefs`, ...) and the
/// generation they describe. Written by the controller through the `status` subresource; a
/// manifest need not have one, and unknown fields in it are ignored, since a newer controller
/// may have written them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The `metadata.generation` of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// The latest observations of the object's state, at most one per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
}

impl Status {
    /// The condition of type `type_`, if there is one.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
