//! `novaedge crdgen`: the CustomResourceDefinitions of NovaEdge's own kinds
//! (`novaedge.io/v1alpha1`), as one multi-document YAML text for `kubectl apply -f -`.
//! `config/crd/novaedge.io.yaml` holds the same text; a test fails when it is stale.

use std::io::Write;
use std::process::ExitCode;

pub(crate) fn crdgen() -> Result<ExitCode, super::Error> {
    let yaml = novaedge_k8s::crd::crd_yaml()?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
