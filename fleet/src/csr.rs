//! The box's certificate signing request, read and checked before anything is created.

use base64::Engine as _;
use std::path::Path;

const BEGIN: &str = "-----BEGIN CERTIFICATE REQUEST-----";
const END: &str = "-----END CERTIFICATE REQUEST-----";

/// A PEM `CERTIFICATE REQUEST` whose body is DER (a sequence): what
/// `CreateCertificateFromCsr` takes. AWS checks the signature and key type itself.
#[derive(Debug, Clone)]
pub struct Csr {
    pem: String,
}

impl Csr {
    pub fn read(path: &Path) -> Result<Csr, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the CSR {}: {e}", path.display()))?;
        Csr::parse(&text).map_err(|why| format!("{} is not a CSR: {why}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Csr, String> {
        if text.contains("PRIVATE KEY") {
            return Err("it holds a private key, which must never leave the box; give the .csr.pem that `sensorbox enroll` wrote".into());
        }
        let start = text
            .find(BEGIN)
            .ok_or("no -----BEGIN CERTIFICATE REQUEST----- line (`sensorbox enroll` writes one)")?;
        let body_start = start + BEGIN.len();
        let end = text[body_start..]
            .find(END)
            .map(|i| body_start + i)
            .ok_or("no -----END CERTIFICATE REQUEST----- line")?;
        let body: String = text[body_start..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body.as_bytes())
            .map_err(|e| format!("its body is not base64 ({e})"))?;
        if der.first() != Some(&0x30) || der.len() < 64 {
            return Err("its body is not a DER certificate request".into());
        }
        Ok(Csr {
            pem: text[start..end + END.len()].to_string() + "\n",
        })
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_csr() {
        for (text, says) in [
            ("", "no -----BEGIN"),
            (
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                "no -----BEGIN CERTIFICATE REQUEST",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
                "private key",
            ),
            (
                "-----BEGIN CERTIFICATE REQUEST-----\n%%%\n-----END CERTIFICATE REQUEST-----\n",
                "not base64",
            ),
            (
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                "not a DER",
            ),
            ("-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n", "no -----END"),
        ] {
            let e = Csr::parse(text).expect_err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }

    #[test]
    fn keeps_the_pem_block_only() {
        let body = base64::engine::general_purpose::STANDARD.encode([0x30u8; 80]);
        let text = format!("comment\n{BEGIN}\n{body}\n{END}\ntrailer\n");
        let csr = Csr::parse(&text).expect("a CSR");
        assert!(csr.pem().starts_with(BEGIN) && csr.pem().ends_with(&format!("{END}\n")));
    }
}
