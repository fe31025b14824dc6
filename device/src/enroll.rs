//! `sensorbox enroll`: the box's own identity (issue 21). A fresh ECDSA P-256 key pair is
//! generated here and the private key (PKCS#8 PEM, mode 0600) goes straight to `[mqtt] key`;
//! only the certificate signing request (subject CN = the thing name) is meant to leave the
//! box. The operator turns the CSR into the thing's certificate with `fleet enroll`, and
//! that certificate goes to `[mqtt] cert`.
//!
//! Both files are written atomically (a temporary file in the same directory, fsync,
//! rename), and an existing key is never replaced without `--force`: the certificate
//! registered for the box is bound to it.

use crate::config::Identity;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const KEY_MODE: u32 = 0o600;
/// The CSR holds nothing secret.
const CSR_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

/// What `enroll` writes and for whom, from the config and the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub thing: String,
    pub group: String,
    /// The private key's file: the config's `[mqtt] key`, or `--key`.
    pub key: PathBuf,
    /// The request's file: `--csr`, or [`csr_path_for`] the key.
    pub csr: PathBuf,
    /// The config's `[mqtt] cert`, where the certificate goes (None: not configured yet).
    pub cert: Option<PathBuf>,
    /// The config has no `[mqtt] key` yet: the key path came from `--key`.
    pub key_not_configured: bool,
}

impl Plan {
    /// `key` and `csr` are the `--key` and `--csr` flags. `--key` is for a config without
    /// `[mqtt] key`; naming another file than the config's is refused, since the agent
    /// would not read it.
    pub fn new(
        identity: &Identity,
        key: Option<PathBuf>,
        csr: Option<PathBuf>,
    ) -> Result<Plan, String> {
        let (key, key_not_configured) =
            match (&identity.key, key) {
                (Some(configured), Some(flag)) if *configured != flag => {
                    return Err(format!(
                        "--key {} differs from the config's [mqtt] key {}: the agent reads the \
                     config's (leave out --key, or change the config first)",
                        flag.display(),
                        configured.display()
                    ))
                }
                (Some(configured), _) => (configured.clone(), false),
                (None, Some(flag)) => (flag, true),
                (None, None) => return Err(
                    "the config has no [mqtt] key: set `key = \"/etc/sensorbox/private.pem.key\"` \
                     under [mqtt], or pass --key PATH"
                        .into(),
                ),
            };
        let csr = csr.unwrap_or_else(|| csr_path_for(&key));
        if csr == key {
            return Err(format!(
                "the CSR would be written over the key {}: pass --csr PATH",
                key.display()
            ));
        }
        Ok(Plan {
            thing: identity.thing_name.clone(),
            group: identity.group.as_str().to_owned(),
            key,
            csr,
            cert: identity.cert.clone(),
            key_not_configured,
        })
    }
}

/// The CSR beside the key: the key's file name up to its first `.`, then `.csr.pem`
/// (`/etc/sensorbox/private.pem.key` -> `/etc/sensorbox/private.csr.pem`).
pub fn csr_path_for(key: &Path) -> PathBuf {
    let name = key
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = match name.find('.') {
        Some(0) | None => name.as_str(),
        Some(dot) => &name[..dot],
    };
    key.with_file_name(format!("{stem}.csr.pem"))
}

/// Generates the key pair and the CSR and writes both. The private key goes to its file
/// only: it is neither returned, printed nor logged.
pub fn write(plan: &Plan, force: bool) -> Result<(), String> {
    if !force && fs::symlink_metadata(&plan.key).is_ok() {
        return Err(format!(
            "{} exists: a new key orphans the certificate registered for this box (it would \
             no longer match its key). Pass --force to replace it anyway, then have the old \
             certificate revoked and a new one made from the new CSR",
            plan.key.display()
        ));
    }
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("cannot generate a P-256 key: {e}"))?;
    let csr = request(&key, &plan.thing)?;
    let key_pem = key.serialize_pem();
    drop(key);

    for path in [&plan.key, &plan.csr] {
        let dir = parent(path);
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    }
    let key_tmp = write_temporary(&plan.key, key_pem.as_bytes(), KEY_MODE)?;
    drop(key_pem);
    let csr_tmp = match write_temporary(&plan.csr, csr.as_bytes(), CSR_MODE) {
        Ok(tmp) => tmp,
        Err(e) => {
            let _ = fs::remove_file(&key_tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&key_tmp, &plan.key) {
        let _ = fs::remove_file(&key_tmp);
        let _ = fs::remove_file(&csr_tmp);
        return Err(format!("{}: cannot write the key: {e}", plan.key.display()));
    }
    if let Err(e) = fs::rename(&csr_tmp, &plan.csr) {
        let _ = fs::remove_file(&csr_tmp);
        return Err(format!(
            "{}: cannot write the CSR: {e} (the new key is at {}: run again with --force)",
            plan.csr.display(),
            plan.key.display()
        ));
    }
    sync_dir(parent(&plan.key))?;
    if parent(&plan.csr) != parent(&plan.key) {
        sync_dir(parent(&plan.csr))?;
    }
    Ok(())
}

/// The PEM CSR for `key` with subject CN = `thing`.
fn request(key: &KeyPair, thing: &str) -> Result<String, String> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, thing);
    params.distinguished_name = subject;
    params
        .serialize_request(key)
        .and_then(|csr| csr.pem())
        .map_err(|e| format!("cannot make the certificate signing request: {e}"))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `contents` in a new file beside `path` with `mode`, flushed to the disk; returns its path.
fn write_temporary(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", path.display()))?;
    let tmp = parent(path).join(format!(
        ".{}.{}-{:08x}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        fastrand::u32(..)
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: cannot create: {e}", tmp.display()))?;
    // The umask may have taken bits off `mode`; set exactly that.
    let written = file
        .set_permissions(Permissions::from_mode(mode))
        .and_then(|()| file.write_all(contents))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(format!("{}: cannot write: {e}", tmp.display()));
    }
    Ok(tmp)
}

/// Makes the renames in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("{}: cannot sync the directory: {e}", dir.display()))
}

/// What the person at the box does next (printed on success).
pub fn next_steps(plan: &Plan, config: &Path) -> String {
    let mut text = format!(
        "New key and certificate signing request for thing {} (group {}):\n  \
         key  {}  (mode 0600; it never leaves this box)\n  \
         csr  {}  (no secret in it)\n\n\
         Next, on the operator's machine, with the CSR copied there:\n  \
         fleet enroll --csr {} --thing {} --group {} --policy <SensorBoxPolicyName>\n",
        plan.thing,
        plan.group,
        plan.key.display(),
        plan.csr.display(),
        shell_word(&plan.csr.to_string_lossy()),
        shell_word(&plan.thing),
        shell_word(&plan.group),
    );
    match &plan.cert {
        Some(cert) => text.push_str(&format!(
            "Then save the certificate it prints on this box as {} (the config's [mqtt] cert)",
            cert.display()
        )),
        None => text.push_str(&format!(
            "Then save the certificate it prints on this box (e.g. {}) and set \
             `cert = \"<that file>\"` under [mqtt] in {}",
            parent(&plan.key).join("device.pem.crt").display(),
            config.display()
        )),
    }
    if plan.key_not_configured {
        text.push_str(&format!(
            ", with `key = \"{}\"` beside it",
            plan.key.display()
        ));
    }
    text.push_str(&format!(
        ", and check:\n  sensorbox --config {} check-config\n",
        shell_word(&config.to_string_lossy())
    ));
    text
}

/// `word` as one shell word: as it is when it needs no quoting, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use sensor_model::domain::group_id::GroupId;

    fn identity(key: Option<PathBuf>) -> Identity {
        Identity {
            group: GroupId::parse("7").expect("group"),
            thing_name: "box-7".into(),
            key,
            cert: Some(PathBuf::from("/etc/sensorbox/device.pem.crt")),
        }
    }

    fn plan_in(dir: &Path) -> Plan {
        let key = dir.join("certs/private.pem.key");
        Plan::new(&identity(Some(key)), None, None).expect("plan")
    }

    /// The parts of a PKCS#10 request (RFC 2986) the tests look at.
    struct Csr {
        info: Vec<u8>,
        common_name: String,
        public_key: Vec<u8>,
        signature_algorithm: yasna::models::ObjectIdentifier,
        signature: Vec<u8>,
    }

    fn parse_csr(pem: &str) -> Csr {
        let der = rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
            .expect("a PEM CERTIFICATE REQUEST");
        let (info, signature_algorithm, signature) = yasna::parse_der(der.as_ref(), |r| {
            r.read_sequence(|r| {
                let info = r.next().read_der()?;
                let algorithm = r.next().read_sequence(|r| r.next().read_oid())?;
                let (signature, _) = r.next().read_bitvec_bytes()?;
                Ok((info, algorithm, signature))
            })
        })
        .expect("CertificationRequest");
        let (common_name, public_key) = yasna::parse_der(&info, |r| {
            r.read_sequence(|r| {
                assert_eq!(r.next().read_u8()?, 0, "version 1");
                let mut common_name = String::new();
                r.next().read_sequence_of(|r| {
                    r.read_set_of(|r| {
                        r.read_sequence(|r| {
                            let oid = r.next().read_oid()?;
                            let value = r.next().read_utf8string()?;
                            if oid.components().as_slice() == [2, 5, 4, 3] {
                                common_name = value;
                            }
                            Ok(())
                        })
                    })
                })?;
                let public_key = r.next().read_sequence(|r| {
                    let curve = r.next().read_sequence(|r| {
                        let kind = r.next().read_oid()?;
                        assert_eq!(kind.components().as_slice(), [1, 2, 840, 10045, 2, 1]);
                        r.next().read_oid()
                    })?;
                    assert_eq!(curve.components().as_slice(), [1, 2, 840, 10045, 3, 1, 7]);
                    Ok(r.next().read_bitvec_bytes()?.0)
                })?;
                r.read_optional(|r| r.read_der())?; // [0] attributes
                Ok((common_name, public_key))
            })
        })
        .expect("CertificationRequestInfo");
        Csr {
            info,
            common_name,
            public_key,
            signature_algorithm,
            signature,
        }
    }

    #[test]
    fn enroll_writes_a_0600_pkcs8_key_in_a_new_0700_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path());
        write(&plan, false).expect("enroll");
        let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode(&plan.key), 0o600);
        assert_eq!(mode(&plan.csr), 0o644);
        assert_eq!(mode(&dir.path().join("certs")), 0o700);
        assert_eq!(plan.csr, dir.path().join("certs/private.csr.pem"));
        let pem = fs::read_to_string(&plan.key).expect("key");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        let key = PrivateKeyDer::from_pem_file(&plan.key).expect("rustls reads the key");
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        // Nothing but the two files is left behind.
        let names: Vec<_> = fs::read_dir(dir.path().join("certs"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn enroll_csr_names_the_thing_and_carries_the_written_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path());
        write(&plan, false).expect("enroll");
        let text = fs::read_to_string(&plan.csr).expect("csr");
        assert!(text.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert!(text
            .trim_end()
            .ends_with("-----END CERTIFICATE REQUEST-----"));
        let csr = parse_csr(&text);
        assert_eq!(csr.common_name, "box-7");
        let key = KeyPair::from_pem(&fs::read_to_string(&plan.key).expect("key")).expect("key");
        assert_eq!(csr.public_key, key.public_key_raw());
        // ecdsa-with-SHA256, and the request is signed by that key.
        assert_eq!(
            csr.signature_algorithm.components().as_slice(),
            [1, 2, 840, 10045, 4, 3, 2]
        );
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            &csr.public_key,
        )
        .verify(&csr.info, &csr.signature)
        .expect("signed by the written key");
    }

    #[test]
    fn enroll_refuses_to_overwrite_a_key_without_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plan = plan_in(dir.path());
        write(&plan, false).expect("first enroll");
        let before = fs::read(&plan.key).expect("key");
        let err = write(&plan, false).expect_err("the key exists");
        assert!(err.contains(&plan.key.display().to_string()), "{err}");
        assert!(err.contains("--force"), "{err}");
        assert_eq!(fs::read(&plan.key).expect("key"), before, "untouched");

        write(&plan, true).expect("--force");
        assert_ne!(fs::read(&plan.key).expect("key"), before, "a new key");
        let key = KeyPair::from_pem(&fs::read_to_string(&plan.key).expect("key")).expect("key");
        let csr = parse_csr(&fs::read_to_string(&plan.csr).expect("csr"));
        assert_eq!(csr.public_key, key.public_key_raw(), "the CSR follows");
        assert_eq!(
            fs::metadata(&plan.key).expect("key").permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn enroll_names_the_path_it_cannot_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").expect("file");
        let plan =
            Plan::new(&identity(Some(blocker.join("private.pem.key"))), None, None).expect("plan");
        let err = write(&plan, false).expect_err("a file where the directory should be");
        assert!(err.contains(&blocker.display().to_string()), "{err}");
    }

    #[test]
    fn enroll_plan_takes_the_config_key_or_the_flag() {
        let configured = PathBuf::from("/etc/sensorbox/private.pem.key");
        let plan = Plan::new(&identity(Some(configured.clone())), None, None).expect("plan");
        assert_eq!(plan.key, configured);
        assert_eq!(plan.csr, PathBuf::from("/etc/sensorbox/private.csr.pem"));
        assert!(!plan.key_not_configured);
        // The same path again is fine, another one is refused.
        Plan::new(&identity(Some(configured.clone())), Some(configured), None).expect("same");
        let err = Plan::new(
            &identity(Some("/etc/sensorbox/private.pem.key".into())),
            Some("/tmp/other.key".into()),
            None,
        )
        .expect_err("another key");
        assert!(err.contains("/tmp/other.key"), "{err}");
        let err = Plan::new(&identity(None), None, None).expect_err("no key at all");
        assert!(err.contains("--key"), "{err}");
        let plan = Plan::new(
            &identity(None),
            Some("box.key".into()),
            Some("/tmp/r.pem".into()),
        )
        .expect("flags");
        assert_eq!(
            (plan.key.as_path(), plan.csr.as_path()),
            (Path::new("box.key"), Path::new("/tmp/r.pem"))
        );
        assert!(plan.key_not_configured);
        let err = Plan::new(&identity(None), Some("a.csr.pem".into()), None)
            .expect_err("the CSR over the key");
        assert!(err.contains("--csr"), "{err}");
        assert_eq!(csr_path_for(Path::new("key")), PathBuf::from("key.csr.pem"));
        assert_eq!(
            csr_path_for(Path::new("/k/.hidden")),
            PathBuf::from("/k/.hidden.csr.pem")
        );
    }

    #[test]
    fn enroll_prints_the_fleet_line_and_where_the_certificate_goes() {
        let plan = Plan::new(
            &identity(Some("/etc/sensorbox/private.pem.key".into())),
            None,
            None,
        )
        .expect("plan");
        let text = next_steps(&plan, Path::new("/etc/sensorbox/config.toml"));
        assert!(
            text.contains(
                "\n  fleet enroll --csr /etc/sensorbox/private.csr.pem --thing box-7 --group 7 --policy <SensorBoxPolicyName>\n"
            ),
            "{text}"
        );
        assert!(text.contains("/etc/sensorbox/device.pem.crt (the config's [mqtt] cert)"));
        assert!(!text.contains("PRIVATE KEY"));
        assert_eq!(shell_word("/a b/it's"), "'/a b/it'\\''s'");
    }
}
