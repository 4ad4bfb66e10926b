//! Authentication: tickets (`PVE:<userid>:<HEX time>::<signature>`), CSRF tokens and API tokens.
//!
//! Tickets are signed with an HMAC-SHA256 key generated at start (PVE signs with RSA; the format and
//! lifetime rules are the same: accepted from −300 s to 7200 s of age).

use base64::Engine;
use ring::hmac;
use std::time::{SystemTime, UNIX_EPOCH};

pub const TICKET_LIFETIME: i64 = 7200;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `user@realm`
    pub user: String,
    /// token name when authenticated by API token
    pub tokenid: Option<String>,
    /// authenticated by ticket (CSRF needed on writes)
    pub ticket: bool,
}

impl Identity {
    /// The user as it appears in UPIDs (`user@realm!token` for tokens).
    pub fn upid_user(&self) -> String {
        match &self.tokenid {
            Some(t) => format!("{}!{}", self.user, t),
            None => self.user.clone(),
        }
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub struct Auth {
    key: hmac::Key,
    /// (userid, password)
    pub users: Vec<(String, String)>,
    /// ("user@realm!id", secret)
    pub tokens: Vec<(String, String)>,
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(data)
}

/// Constant-time string comparison.
fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    pub fn new(users: Vec<(String, String)>, tokens: Vec<(String, String)>) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &rng)
            .unwrap_or_else(|_| hmac::Key::new(hmac::HMAC_SHA256, &rand::random::<[u8; 32]>()));
        Auth { key, users, tokens }
    }

    fn sign(&self, data: &str) -> String {
        b64(hmac::sign(&self.key, data.as_bytes()).as_ref())
    }

    pub fn make_ticket(&self, user: &str) -> String {
        self.make_ticket_at(user, now())
    }

    pub fn make_ticket_at(&self, user: &str, t: i64) -> String {
        let plain = format!("PVE:{user}:{t:08X}");
        format!("{plain}::{}", self.sign(&plain))
    }

    pub fn csrf_token(&self, user: &str) -> String {
        let t = now();
        format!("{t:08X}:{}", self.sign(&format!("{t:08X}:{user}")))
    }

    /// Verify a ticket; returns the user.
    pub fn verify_ticket(&self, ticket: &str) -> Option<String> {
        let (plain, sig) = ticket.split_once("::")?;
        let mut parts = plain.splitn(3, ':');
        if parts.next()? != "PVE" {
            return None;
        }
        let user = parts.next()?;
        let t = i64::from_str_radix(parts.next()?, 16).ok()?;
        if !ct_eq(&self.sign(plain), sig) {
            return None;
        }
        let age = now() - t;
        if !(-300..=TICKET_LIFETIME).contains(&age) {
            return None;
        }
        Some(user.to_string())
    }

    pub fn verify_csrf(&self, token: &str, user: &str) -> bool {
        let Some((t, sig)) = token.split_once(':') else {
            return false;
        };
        let Ok(ts) = i64::from_str_radix(t, 16) else {
            return false;
        };
        let age = now() - ts;
        if !(-300..=TICKET_LIFETIME).contains(&age) {
            return false;
        }
        ct_eq(&self.sign(&format!("{t}:{user}")), sig)
    }

    /// `POST /access/ticket`: password login or ticket renewal.
    pub fn login(&self, username: &str, realm: Option<&str>, password: &str) -> Option<String> {
        let user = if username.contains('@') {
            username.to_string()
        } else {
            format!("{username}@{}", realm.unwrap_or("pam"))
        };
        if password.starts_with("PVE:") {
            return match self.verify_ticket(password) {
                Some(u) if u == user => Some(user),
                _ => None,
            };
        }
        self.users
            .iter()
            .any(|(u, p)| *u == user && ct_eq(p, password))
            .then_some(user)
    }

    /// `Authorization: PVEAPIToken=USER@REALM!ID=SECRET` (or a space after `PVEAPIToken`).
    pub fn verify_token(&self, header: &str) -> Option<Identity> {
        let rest = header.strip_prefix("PVEAPIToken")?;
        let rest = rest.strip_prefix('=').or_else(|| rest.strip_prefix(' '))?;
        let rest = percent_encoding::percent_decode_str(rest)
            .decode_utf8_lossy()
            .into_owned();
        let (full, secret) = rest.rsplit_once('=')?;
        let (user, tokenid) = full.split_once('!')?;
        let ok = self
            .tokens
            .iter()
            .any(|(id, s)| id == full && ct_eq(s, secret));
        ok.then(|| Identity {
            user: user.to_string(),
            tokenid: Some(tokenid.to_string()),
            ticket: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_roundtrip_and_expiry() {
        let a = Auth::new(vec![("root@pam".into(), "pw".into())], vec![]);
        let t = a.make_ticket("root@pam");
        assert!(t.starts_with("PVE:root@pam:"));
        assert_eq!(a.verify_ticket(&t).as_deref(), Some("root@pam"));
        let old = a.make_ticket_at("root@pam", now() - 7300);
        assert_eq!(a.verify_ticket(&old), None);
        let forged = t.replace("root@pam", "admin@pam");
        assert_eq!(a.verify_ticket(&forged), None);
        let c = a.csrf_token("root@pam");
        assert!(a.verify_csrf(&c, "root@pam"));
        assert!(!a.verify_csrf(&c, "other@pam"));
        assert_eq!(
            a.login("root", Some("pam"), "pw").as_deref(),
            Some("root@pam")
        );
        assert_eq!(a.login("root@pam", None, "bad"), None);
        assert_eq!(a.login("root@pam", None, &t).as_deref(), Some("root@pam"));
    }

    #[test]
    fn token_header() {
        let a = Auth::new(vec![], vec![("root@pam!kiln".into(), "s3cret".into())]);
        let id = a.verify_token("PVEAPIToken=root@pam!kiln=s3cret").unwrap();
        assert_eq!(id.upid_user(), "root@pam!kiln");
        assert!(a.verify_token("PVEAPIToken root@pam!kiln=s3cret").is_some());
        assert!(a.verify_token("PVEAPIToken=root@pam!kiln=wrong").is_none());
    }
}

/// A random 128-bit secret as 32 hex digits, from the OS RNG (`getrandom`). An RNG failure (or
/// the impossible all-zero draw) is an error: the caller must not fall back to a weak secret.
pub fn random_secret_hex() -> Result<String, String> {
    use rand::TryRngCore;
    let mut b = [0u8; 16];
    let r = rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .map_err(|e| e.to_string());
    secret_from(r.map(|()| b))
}

fn secret_from(r: Result<[u8; 16], String>) -> Result<String, String> {
    match r {
        Ok(b) if b.iter().any(|x| *x != 0) => Ok(hex::encode(b)),
        Ok(_) => Err("the OS random number generator returned all zeros".into()),
        Err(e) => Err(format!("the OS random number generator failed: {e}")),
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secrets_come_from_the_os_rng_or_not_at_all() {
        let a = random_secret_hex().unwrap_or_default();
        let b = random_secret_hex().unwrap_or_default();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        // issue 11: a failed /dev/urandom read left an all-zero password
        assert!(secret_from(Err("EIO".into()))
            .unwrap_err()
            .contains("failed: EIO"));
        assert!(secret_from(Ok([0u8; 16])).is_err());
    }
}
