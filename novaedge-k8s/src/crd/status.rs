//! The `status` of every NovaEdge kind: [`Status`] (conditions) for most, with the parts of
//! a ProxyGateway (listeners) and a ProxyRoute (parents) in their own types.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::route::ParentRef;

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

/// The `status` of a ProxyGateway: as a Gateway API Gateway's, without the route kinds (a
/// ProxyGateway takes ProxyRoutes only) and addresses (its ProxyVIP's). Written by the
/// controller through the `status` subresource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyGatewayStatus {
    /// The `metadata.generation` of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// `Accepted` (every listener is valid) and `Programmed` (some listener is served).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// One entry per listener of the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub listeners: Vec<ProxyListenerStatus>,
}

/// The status of one listener of a ProxyGateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyListenerStatus {
    /// The listener's name in the spec.
    pub name: String,
    /// How many ProxyRoutes are attached to it.
    #[schemars(range(min = 0))]
    pub attached_routes: i32,
    /// `Accepted`, `ResolvedRefs`, `Conflicted` and `Programmed`, as a Gateway listener's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
}

/// The `status` of a ProxyRoute: as a Gateway API HTTPRoute's, one entry per parent reference
/// (all NovaEdge's). Written by the controller through the `status` subresource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRouteStatus {
    /// The `metadata.generation` of the spec that the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
    /// How the route fared with each of its `spec.parentRefs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub parents: Vec<ProxyRouteParentStatus>,
}

/// The status of a ProxyRoute under one of its parents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyRouteParentStatus {
    /// The parent reference, as in the spec.
    pub parent_ref: ParentRef,
    /// `Accepted` (attached through this parent) and `ResolvedRefs` (every backend exists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
}
