//! One TLS stack for the whole process: rustls on the `ring` provider, the
//! one kube's client uses. Two providers in one process make rustls refuse
//! to pick a default.

pub fn install_crypto_provider() {
    // Err means one is installed already (tests call this many times).
    let _ = rustls::crypto::ring::default_provider().install_default();
}
