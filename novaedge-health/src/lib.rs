//! Endpoint health for load balancers: active probes, passive outlier detection and circuit
//! breaking, generic over the endpoint key.

#![forbid(unsafe_code)]
