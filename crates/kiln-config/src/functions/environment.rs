//! `env()` (only in variable defaults, as Packer) and the secret-store functions kiln rejects with a hint.

use hcl::Value;

use super::{arg_str, arity, Func, FuncContext, FuncError, Res};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("env", env),
    ("vault", secret_store),
    ("aws_secretsmanager", secret_store),
    ("aws_secretsmanager_raw", secret_store),
    ("consul_key", secret_store),
];

/// `env(name)`: the value of an environment variable, "" when unset. Packer only allows it in variable defaults.
fn env(name: &str, args: Vec<Value>, ctx: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let var = arg_str(name, 0, &args[0])?;
    if !ctx.allow_env {
        return Err(FuncError::Failed {
            name: name.to_string(),
            msg: "the env() function is only allowed in variable defaults (as in Packer); declare a variable \
                  with `default = env(\"NAME\")` or set it through PKR_VAR_<name>"
                .to_string(),
        });
    }
    Ok(Value::String(std::env::var(&var).unwrap_or_default()))
}

fn secret_store(name: &str, _args: Vec<Value>, _: &FuncContext) -> Res {
    Err(FuncError::NotSupported {
        name: name.to_string(),
        hint: "kiln does not talk to secret stores; fetch the secret yourself and pass it with -var name=… \
               or the PKR_VAR_name environment variable, and mark the variable `sensitive = true`"
            .to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{call, FuncError};
    use super::*;

    #[test]
    fn env_only_in_defaults() {
        let e = err("env", &["\"HOME\""]);
        assert!(
            e.to_string().contains("only allowed in variable defaults"),
            "{e}"
        );
        let mut cx = ctx();
        cx.allow_env = true;
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(
            call("env", vec![s("PATH")], &cx).ok(),
            Some(Value::String(path))
        );
        assert_eq!(
            call("env", vec![s("KILN_SURELY_UNSET_VAR_X")], &cx).ok(),
            Some(s(""))
        );
        assert!(call("env", vec![], &cx).is_err());
        assert!(call("env", vec![v("[1]")], &cx).is_err());
    }

    #[test]
    fn secret_stores_not_supported() {
        for f in [
            "vault",
            "aws_secretsmanager",
            "aws_secretsmanager_raw",
            "consul_key",
        ] {
            match c(f, &["\"/secret/x\"", "\"key\""]) {
                Err(FuncError::NotSupported { hint, .. }) => {
                    assert!(hint.contains("PKR_VAR_"), "{hint}")
                }
                other => panic!("{f}: {other:?}"),
            }
        }
    }
}
