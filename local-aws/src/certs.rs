//! The local certificate authority: a CA, the broker's server certificate and one device
//! certificate per thing, as IoT Core hands them out (`rcgen`, ECDSA P-256, PEM files).
//!
//! Generated on first use under a directory (`target/dev/certs` for `cargo xtask dev`) and
//! reused afterwards, so a box configured once keeps working across restarts of the stack.
//! The CA key stays in that directory: it is a development CA that signs nothing else.

use crate::thing_name::valid_thing_name;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::fs;
use std::path::{Path, PathBuf};

/// The PEM files of one identity (a server or a device).
#[derive(Clone, Debug)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A CA on disk, able to issue server and device certificates.
#[derive(Clone, Debug)]
pub struct Certs {
    dir: PathBuf,
}

impl Certs {
    /// Opens the CA under `dir`, creating the directory, the CA and the server certificate
    /// (for `localhost` and `127.0.0.1`) if they are not there yet.
    pub fn ensure(dir: &Path) -> Result<Certs, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let certs = Certs {
            dir: dir.to_path_buf(),
        };
        if !certs.ca().exists() || !certs.dir.join("ca.key").exists() {
            let key = KeyPair::generate().map_err(|e| format!("CA key: {e}"))?;
            let cert = ca_params()
                .self_signed(&key)
                .map_err(|e| format!("CA certificate: {e}"))?;
            write(&certs.dir.join("ca.key"), &key.serialize_pem())?;
            write(&certs.ca(), &cert.pem())?;
            // A new CA invalidates everything it signed before.
            for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let path = entry.map_err(|e| e.to_string())?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                let issued = name.ends_with(".pem") || name.ends_with(".key");
                if issued && !name.starts_with("ca.") {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        if !certs.crl().exists() {
            let _ = fs::remove_file(certs.dir.join(REVOKED));
            certs.write_crl()?;
        }
        let server = certs.identity("server");
        if !server.cert.exists() || !server.key.exists() {
            certs.issue(
                "server",
                vec!["localhost".into(), "127.0.0.1".into()],
                ExtendedKeyUsagePurpose::ServerAuth,
            )?;
        }
        Ok(certs)
    }

    /// The CA certificate (what a box trusts, in place of `AmazonRootCA1.pem`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The broker's certificate and key.
    pub fn server(&self) -> Identity {
        self.identity("server")
    }

    /// The certificate and key of `thing` (common name = thing name), issued if missing.
    pub fn device(&self, thing: &str) -> Result<Identity, String> {
        // The shadow service's rule for thing names; `server` and `ca` are taken here.
        if !valid_thing_name(thing) || thing == "server" || thing == "ca" {
            return Err(format!(
                "thing name {thing:?}: use [a-zA-Z0-9:_-], as IoT Core does"
            ));
        }
        let identity = self.identity(thing);
        if identity.cert.exists() && identity.key.exists() {
            return Ok(identity);
        }
        self.issue(thing, Vec::new(), ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn identity(&self, name: &str) -> Identity {
        Identity {
            cert: self.dir.join(format!("{name}.pem")),
            key: self.dir.join(format!("{name}.key")),
        }
    }

    fn issue(
        &self,
        name: &str,
        names: Vec<String>,
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<Identity, String> {
        let ca_key = read(&self.dir.join("ca.key"))?;
        let ca_key = KeyPair::from_pem(&ca_key).map_err(|e| format!("CA key: {e}"))?;
        // The issuer is the CA's subject and key; its parameters are fixed (`ca_params`),
        // so they need not be parsed back from ca.pem.
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().map_err(|e| format!("{name} key: {e}"))?;
        let mut params =
            CertificateParams::new(names).map_err(|e| format!("{name} certificate: {e}"))?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| format!("{name} certificate: {e}"))?;
        let identity = self.identity(name);
        write(&identity.key, &key.serialize_pem())?;
        write(&identity.cert, &cert.pem())?;
        Ok(identity)
    }
}

/// The revoked serial numbers (hex, one a line) the revocation list is made from.
const REVOKED: &str = "revoked.txt";

impl Certs {
    /// The CA's certificate revocation list (PEM): the broker's TLS listener refuses the
    /// certificates it names. Written empty with the CA, rewritten on each revocation.
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }

    /// Adds the certificate with `serial` to the revocation list (idempotent).
    pub fn revoke(&self, serial: &[u8]) -> Result<(), String> {
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        let list = self.dir.join(REVOKED);
        let mut serials = fs::read_to_string(&list).unwrap_or_default();
        if !serials.lines().any(|line| line == hex) {
            serials.push_str(&hex);
            serials.push('\n');
            write(&list, &serials)?;
        }
        self.write_crl()
    }

    /// Signs and writes the revocation list of the serials in `revoked.txt`.
    fn write_crl(&self) -> Result<(), String> {
        let serials = fs::read_to_string(self.dir.join(REVOKED)).unwrap_or_default();
        let now = time::OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for line in serials.lines().filter(|l| !l.is_empty()) {
            let bytes = (0..line.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(line.get(i..i + 2).unwrap_or("zz"), 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| format!("{REVOKED}: {line:?} is not a hex serial"))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(&bytes),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(365),
            crl_number: rcgen::SerialNumber::from_slice(
                &u64::try_from(now.unix_timestamp())
                    .unwrap_or(1)
                    .to_be_bytes(),
            ),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let ca_key = read(&self.dir.join("ca.key"))?;
        let ca_key = KeyPair::from_pem(&ca_key).map_err(|e| format!("CA key: {e}"))?;
        let crl = params
            .signed_by(&Issuer::new(ca_params(), ca_key))
            .map_err(|e| format!("revocation list: {e}"))?;
        let pem = crl.pem().map_err(|e| format!("revocation list: {e}"))?;
        write(&self.crl(), &pem)
    }

    /// A client certificate for the key in `csr_pem` (a PEM certificate request), signed by
    /// the local CA: what `CreateCertificateFromCsr` does with AWS's CA. The subject is the
    /// CSR's; the usage is client authentication, as IoT Core's device certificates.
    pub fn sign_csr(&self, csr_pem: &str) -> Result<String, String> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| format!("certificateSigningRequest is not a valid CSR: {e}"))?;
        csr.params.is_ca = IsCa::ExplicitNoCa;
        csr.params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        csr.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        csr.params.serial_number = Some(rcgen::SerialNumber::from_slice(
            &fastrand::u64(1..).to_be_bytes(),
        ));
        let ca_key = read(&self.dir.join("ca.key"))?;
        let ca_key = KeyPair::from_pem(&ca_key).map_err(|e| format!("CA key: {e}"))?;
        let issuer = Issuer::new(ca_params(), ca_key);
        csr.signed_by(&issuer)
            .map(|cert| cert.pem())
            .map_err(|e| format!("signing the CSR: {e}"))
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "sensor-ingest local CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
