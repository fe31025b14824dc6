//! The temporary credentials the local credentials provider has issued: what STS knows
//! about a session, so the gateway can check a signature made with them.
//!
//! Each set is bound to the thing it was issued for (the `x-amzn-iot-thingname` of the
//! request, checked against the certificate), as the deployed role's policy variable
//! `${credentials-iot:ThingName}` binds it.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The account id the local stack reports in ARNs.
pub const ACCOUNT: &str = "000000000000";
/// The role the local credentials provider assumes (the stacks' `SensorBoxHttpsRole`).
pub const ROLE: &str = "SensorBoxHttpsRole";
/// The role's id, as `identity.caller` shows it (`AROA...:<session>`).
pub const ROLE_ID: &str = "AROALOCALSENSORBOXROLE";

/// One set of temporary credentials.
#[derive(Clone)]
pub struct Issued {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// The thing the credentials were issued to.
    pub thing: String,
    pub expires: SystemTime,
}

impl Issued {
    /// `arn:aws:sts::<account>:assumed-role/<role>/<thing>`: the caller as IAM names it.
    pub fn user_arn(&self) -> String {
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/{ROLE}/{}", self.thing)
    }
}

impl fmt::Debug for Issued {
    // Never the secret or the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("access_key_id", &self.access_key_id)
            .field("thing", &self.thing)
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// The sessions issued so far, shared by the credentials provider and the gateway.
#[derive(Clone, Default)]
pub struct IssuedCredentials(Arc<Mutex<HashMap<String, Issued>>>);

impl fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedCredentials({} sessions)", self.lock().len())
    }
}

impl IssuedCredentials {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Issued>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New credentials for `thing`, valid for `lifetime` from `now`.
    pub fn issue(&self, thing: &str, lifetime: Duration, now: SystemTime) -> Issued {
        let mut rng = fastrand::Rng::new();
        let mut text = |alphabet: &[u8], n: usize| -> String {
            (0..n)
                .map(|_| char::from(alphabet[rng.usize(..alphabet.len())]))
                .collect()
        };
        const UPPER: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const ANY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let issued = Issued {
            // ASIA: AWS's prefix for temporary (STS) access keys.
            access_key_id: format!("ASIA{}", text(UPPER, 16)),
            secret_access_key: text(ANY, 40),
            session_token: text(ANY, 200),
            thing: thing.to_owned(),
            expires: now + lifetime,
        };
        // Sessions long expired are forgotten, so a long-running stack does not grow.
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires + Duration::from_secs(3600) > now);
        sessions.insert(issued.access_key_id.clone(), issued.clone());
        issued
    }

    /// The session of `access_key_id`, if this stack issued it.
    pub fn get(&self, access_key_id: &str) -> Option<Issued> {
        self.lock().get(access_key_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_sessions_are_found_by_access_key_and_hide_their_secret() {
        let store = IssuedCredentials::default();
        let now = SystemTime::now();
        let a = store.issue("box-a", Duration::from_secs(60), now);
        let b = store.issue("box-b", Duration::from_secs(60), now);
        assert_ne!(a.access_key_id, b.access_key_id);
        assert!(a.access_key_id.starts_with("ASIA") && a.access_key_id.len() == 20);
        assert_eq!(
            store.get(&a.access_key_id).map(|s| s.thing),
            Some("box-a".into())
        );
        assert!(store.get("ASIANOTISSUED").is_none());
        let shown = format!("{a:?}");
        assert!(!shown.contains(&a.secret_access_key) && !shown.contains(&a.session_token));
        assert_eq!(
            a.user_arn(),
            "arn:aws:sts::000000000000:assumed-role/SensorBoxHttpsRole/box-a"
        );
    }
}
