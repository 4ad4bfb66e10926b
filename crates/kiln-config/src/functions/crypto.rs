//! Hash and crypto functions: md5, sha1, sha256, sha512, base64sha256, base64sha512, bcrypt, uuidv4.

use base64::Engine as _;
use hcl::Value;
use md5::Digest as _;

use super::{arg_int, arg_str, arity, failed, Func, FuncContext, Res};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("md5", md5_fn),
    ("sha1", sha1_fn),
    ("sha256", sha256_fn),
    ("sha512", sha512_fn),
    ("base64sha256", base64sha256),
    ("base64sha512", base64sha512),
    ("bcrypt", bcrypt_fn),
    ("uuidv4", uuidv4),
];

fn input(name: &str, args: &[Value]) -> Result<String, super::FuncError> {
    arity(name, args, 1, Some(1))?;
    arg_str(name, 0, &args[0])
}

pub(crate) fn digest_hex<D: md5::Digest>(data: &[u8]) -> String {
    hex::encode(D::digest(data))
}

fn md5_fn(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(digest_hex::<md5::Md5>(
        input(name, &args)?.as_bytes(),
    )))
}

fn sha1_fn(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(digest_hex::<sha1::Sha1>(
        input(name, &args)?.as_bytes(),
    )))
}

fn sha256_fn(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(digest_hex::<sha2::Sha256>(
        input(name, &args)?.as_bytes(),
    )))
}

fn sha512_fn(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    Ok(Value::String(digest_hex::<sha2::Sha512>(
        input(name, &args)?.as_bytes(),
    )))
}

fn base64sha256(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let d = sha2::Sha256::digest(input(name, &args)?.as_bytes());
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(d),
    ))
}

fn base64sha512(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let d = sha2::Sha512::digest(input(name, &args)?.as_bytes());
    Ok(Value::String(
        base64::engine::general_purpose::STANDARD.encode(d),
    ))
}

/// Highest bcrypt cost kiln computes (Packer allows 31, which takes days).
pub const MAX_BCRYPT_COST: i64 = 14;

/// `bcrypt(str, cost = 10)`: a `$2a$` hash with a random salt (different on every call, as in Packer).
fn bcrypt_fn(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(2))?;
    let s = arg_str(name, 0, &args[0])?;
    let cost = match args.get(1) {
        Some(c) => arg_int(name, 1, c)?,
        None => 10,
    };
    if !(4..=31).contains(&cost) {
        return Err(failed(
            name,
            format!("cost must be between 4 and 31, got {cost}"),
        ));
    }
    // every step doubles the time: cost 31 takes days; 14 is about a second
    if cost > MAX_BCRYPT_COST {
        return Err(failed(
            name,
            format!(
                "cost {cost} is more than kiln's limit of {MAX_BCRYPT_COST} (each step doubles the time; see \"Limits on hostile templates\" in the README)"
            ),
        ));
    }
    let parts = bcrypt::hash_with_result(s.as_bytes(), cost as u32)
        .map_err(|e| failed(name, e.to_string()))?;
    Ok(Value::String(
        parts.format_for_version(bcrypt::Version::TwoA),
    ))
}

fn uuidv4(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 0, Some(0))?;
    Ok(Value::String(uuid::Uuid::new_v4().to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use hcl::Value;

    #[test]
    fn hashes() {
        ok(
            "md5",
            &["\"hello world\""],
            "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"",
        );
        ok(
            "sha1",
            &["\"hello world\""],
            "\"2aae6c35c94fcfb415dbe95f408b9ce91ee846ed\"",
        );
        ok(
            "sha256",
            &["\"hello world\""],
            "\"b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9\"",
        );
        ok(
            "sha512",
            &["\"hello world\""],
            "\"309ecc489c12d6eb4cc40f50c902f2b4d0ed77ee511a7c7a9bcd3ca86d4cd86f989dd35bc5ff499670da34255b45b0cfd830e81f605dcf7dc5542e93ae9cd76f\"",
        );
        ok(
            "base64sha256",
            &["\"hello world\""],
            "\"uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=\"",
        );
        ok("base64sha512", &["\"\""], "\"z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg==\"");
        err("sha256", &["[]"]);
        err("md5", &[]);
    }

    #[test]
    fn bcrypt_hash() {
        let h = match c("bcrypt", &["\"hello world\""]) {
            Ok(Value::String(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(h.starts_with("$2a$10$"), "{h}");
        assert!(bcrypt::verify("hello world", &h).unwrap_or(false));
        let h4 = match c("bcrypt", &["\"x\"", "4"]) {
            Ok(Value::String(s)) => s,
            other => panic!("{other:?}"),
        };
        assert!(h4.starts_with("$2a$04$"), "{h4}");
        err("bcrypt", &["\"x\"", "3"]);
        err("bcrypt", &["\"x\"", "32"]);
        err("bcrypt", &[]);
    }

    #[test]
    fn uuid() {
        let a = c("uuidv4", &[]).expect("uuid");
        let b = c("uuidv4", &[]).expect("uuid");
        assert_ne!(a, b);
        match a {
            Value::String(s) => {
                assert_eq!(s.len(), 36);
                assert_eq!(s.as_bytes()[14], b'4');
            }
            other => panic!("{other:?}"),
        }
        err("uuidv4", &["1"]);
    }
}
