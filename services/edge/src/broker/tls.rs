//! TLS to NATS (rustls with the ring provider): the server is checked
//! against `QRLOGIN_NATS_TLS_CA_FILE` (else the system's roots), and a
//! client certificate is presented when one is configured.

use std::{path::Path, sync::Arc};

use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore,
};

use super::BrokerError;

fn tls_err(what: &str, e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Tls(format!("{what}: {e}"))
}

pub fn client_config(
    ca: Option<&Path>,
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Arc<ClientConfig>, BrokerError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_err(&format!("QRLOGIN_NATS_TLS_CA_FILE {}", path.display()), e))?;
            for cert in certs {
                let cert = cert.map_err(|e| tls_err("QRLOGIN_NATS_TLS_CA_FILE", e))?;
                roots
                    .add(cert)
                    .map_err(|e| tls_err("QRLOGIN_NATS_TLS_CA_FILE", e))?;
            }
            if roots.is_empty() {
                return Err(BrokerError::Tls(
                    "QRLOGIN_NATS_TLS_CA_FILE holds no certificate".into(),
                ));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("protocol versions", e))?
            .with_root_certificates(roots);
    let config = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| tls_err("QRLOGIN_NATS_TLS_CERT_FILE", e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| tls_err("QRLOGIN_NATS_TLS_KEY_FILE", e))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_err("client certificate", e))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(BrokerError::Tls(
                "QRLOGIN_NATS_TLS_CERT_FILE and QRLOGIN_NATS_TLS_KEY_FILE go together".into(),
            ))
        }
    };
    Ok(Arc::new(config))
}
