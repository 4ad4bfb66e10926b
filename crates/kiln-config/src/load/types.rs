//! Variable type constraints (`string`, `list(string)`, `object({…})`, …) read from the raw
//! expression (never evaluated), and cty-style conversion of values to them.

use super::eval::{type_name, Map};
use hcl::expr::{Expression, ObjectKey};
use hcl::{Number, Value};

#[derive(Debug, Clone, PartialEq)]
pub enum Type {
    Any,
    String,
    Number,
    Bool,
    List(Box<Type>),
    Set(Box<Type>),
    Map(Box<Type>),
    Tuple(Vec<Type>),
    /// attributes with (type, optional, default)
    Object(Vec<(String, Type, bool, Option<Value>)>),
}

impl Type {
    pub fn parse(e: &Expression) -> Result<Type, String> {
        match e {
            Expression::Variable(v) => match v.as_str() {
                "string" => Ok(Type::String),
                "number" => Ok(Type::Number),
                "bool" => Ok(Type::Bool),
                "any" => Ok(Type::Any),
                "list" => Ok(Type::List(Box::new(Type::Any))),
                "map" => Ok(Type::Map(Box::new(Type::Any))),
                "set" => Ok(Type::Set(Box::new(Type::Any))),
                other => Err(format!("unknown type \"{other}\"")),
            },
            Expression::String(s) => Type::parse(&Expression::Variable(
                hcl::expr::Variable::unchecked(s.clone()),
            )),
            Expression::FuncCall(f) => {
                let name = f.name.name.as_str();
                let arg = |i: usize| {
                    f.args
                        .get(i)
                        .ok_or_else(|| format!("{name}(…) needs an argument"))
                };
                match name {
                    "list" => Ok(Type::List(Box::new(Type::parse(arg(0)?)?))),
                    "set" => Ok(Type::Set(Box::new(Type::parse(arg(0)?)?))),
                    "map" => Ok(Type::Map(Box::new(Type::parse(arg(0)?)?))),
                    "tuple" => match arg(0)? {
                        Expression::Array(items) => Ok(Type::Tuple(
                            items.iter().map(Type::parse).collect::<Result<_, _>>()?,
                        )),
                        _ => Err("tuple(…) needs a list of types".into()),
                    },
                    "object" => match arg(0)? {
                        Expression::Object(obj) => {
                            let mut attrs = Vec::new();
                            for (k, v) in obj {
                                let key = match k {
                                    ObjectKey::Identifier(i) => i.as_str().to_string(),
                                    ObjectKey::Expression(Expression::String(s)) => s.clone(),
                                    ObjectKey::Expression(Expression::Variable(v)) => {
                                        v.as_str().to_string()
                                    }
                                    _ => {
                                        return Err(
                                            "object attribute names must be identifiers".into()
                                        )
                                    }
                                };
                                let (t, optional, default) = match v {
                                    Expression::FuncCall(of)
                                        if of.name.name.as_str() == "optional" =>
                                    {
                                        let t = Type::parse(
                                            of.args.first().ok_or("optional(…) needs a type")?,
                                        )?;
                                        let d = of.args.get(1).and_then(literal_value);
                                        (t, true, d)
                                    }
                                    other => (Type::parse(other)?, false, None),
                                };
                                attrs.push((key, t, optional, default));
                            }
                            Ok(Type::Object(attrs))
                        }
                        _ => Err("object(…) needs an object of attribute types".into()),
                    },
                    other => Err(format!("unknown type constructor \"{other}\"")),
                }
            }
            _ => Err("invalid type constraint".into()),
        }
    }

    pub fn is_primitive_string(&self) -> bool {
        matches!(self, Type::String)
    }

    pub fn display(&self) -> String {
        match self {
            Type::Any => "any".into(),
            Type::String => "string".into(),
            Type::Number => "number".into(),
            Type::Bool => "bool".into(),
            Type::List(t) => format!("list({})", t.display()),
            Type::Set(t) => format!("set({})", t.display()),
            Type::Map(t) => format!("map({})", t.display()),
            Type::Tuple(ts) => format!(
                "tuple([{}])",
                ts.iter()
                    .map(|t| t.display())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Type::Object(attrs) => format!(
                "object({{{}}})",
                attrs
                    .iter()
                    .map(|(k, t, o, _)| if *o {
                        format!("{k}=optional({})", t.display())
                    } else {
                        format!("{k}={}", t.display())
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Convert `v` to this type the way cty does (string ↔ number/bool, extra object attributes
    /// dropped, missing optional attributes filled).
    pub fn convert(&self, v: Value) -> Result<Value, String> {
        if v == Value::Null {
            return Ok(Value::Null);
        }
        match self {
            Type::Any => Ok(v),
            Type::String => match v {
                Value::String(_) => Ok(v),
                Value::Number(n) => Ok(Value::String(n.to_string())),
                Value::Bool(b) => Ok(Value::String(b.to_string())),
                other => Err(format!("a string is required, got {}", type_name(&other))),
            },
            Type::Number => match v {
                Value::Number(_) => Ok(v),
                Value::String(ref s) => {
                    parse_number(s).ok_or_else(|| format!("a number is required, got \"{s}\""))
                }
                other => Err(format!("a number is required, got {}", type_name(&other))),
            },
            Type::Bool => match v {
                Value::Bool(_) => Ok(v),
                Value::String(ref s) if s == "true" => Ok(Value::Bool(true)),
                Value::String(ref s) if s == "false" => Ok(Value::Bool(false)),
                other => Err(format!("a bool is required, got {}", describe(&other))),
            },
            Type::List(t) | Type::Set(t) => match v {
                Value::Array(items) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, it) in items.into_iter().enumerate() {
                        out.push(t.convert(it).map_err(|e| format!("element {i}: {e}"))?);
                    }
                    if matches!(self, Type::Set(_)) {
                        let mut dedup: Vec<Value> = Vec::new();
                        for x in out {
                            if !dedup.contains(&x) {
                                dedup.push(x);
                            }
                        }
                        return Ok(Value::Array(dedup));
                    }
                    Ok(Value::Array(out))
                }
                other => Err(format!("a list is required, got {}", type_name(&other))),
            },
            Type::Tuple(ts) => match v {
                Value::Array(items) if items.len() == ts.len() => {
                    let mut out = Vec::new();
                    for (i, (it, t)) in items.into_iter().zip(ts).enumerate() {
                        out.push(t.convert(it).map_err(|e| format!("element {i}: {e}"))?);
                    }
                    Ok(Value::Array(out))
                }
                other => Err(format!(
                    "a tuple of {} elements is required, got {}",
                    ts.len(),
                    type_name(&other)
                )),
            },
            Type::Map(t) => match v {
                Value::Object(m) => {
                    let mut out = Map::new();
                    for (k, x) in m {
                        let c = t.convert(x).map_err(|e| format!("element \"{k}\": {e}"))?;
                        out.insert(k, c);
                    }
                    Ok(Value::Object(out))
                }
                other => Err(format!("a map is required, got {}", type_name(&other))),
            },
            Type::Object(attrs) => match v {
                Value::Object(mut m) => {
                    let mut out = Map::new();
                    for (k, t, optional, default) in attrs {
                        match m.swap_remove(k) {
                            Some(x) => {
                                out.insert(
                                    k.clone(),
                                    t.convert(x)
                                        .map_err(|e| format!("attribute \"{k}\": {e}"))?,
                                );
                            }
                            None if *optional => {
                                out.insert(k.clone(), default.clone().unwrap_or(Value::Null));
                            }
                            None => return Err(format!("attribute \"{k}\" is required")),
                        }
                    }
                    Ok(Value::Object(out))
                }
                other => Err(format!("an object is required, got {}", type_name(&other))),
            },
        }
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => type_name(other).to_string(),
    }
}

pub fn parse_number(s: &str) -> Option<Value> {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Some(Value::Number(Number::from(i)));
    }
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(Number::from_f64)
        .map(Value::Number)
}

fn literal_value(e: &Expression) -> Option<Value> {
    match e {
        Expression::Null => Some(Value::Null),
        Expression::Bool(b) => Some(Value::Bool(*b)),
        Expression::Number(n) => Some(Value::Number(*n)),
        Expression::String(s) => Some(Value::String(s.clone())),
        Expression::Array(a) => a
            .iter()
            .map(literal_value)
            .collect::<Option<Vec<_>>>()
            .map(Value::Array),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ty(s: &str) -> Type {
        let body: hcl::Body = hcl::from_str(&format!("t = {s}\n")).unwrap();
        let attr = body.attributes().next().unwrap();
        Type::parse(attr.expr()).unwrap()
    }

    #[test]
    fn converts_like_cty() {
        assert_eq!(
            ty("number").convert(Value::from("2")).unwrap(),
            Value::from(2)
        );
        assert_eq!(
            ty("bool").convert(Value::from("false")).unwrap(),
            Value::Bool(false)
        );
        assert_eq!(
            ty("string").convert(Value::from(3)).unwrap(),
            Value::from("3")
        );
        assert!(ty("list(string)").convert(Value::from("x")).is_err());
        let o = ty("object({a = string, b = optional(number)})");
        let v: Value = hcl::value!({ a = "x", extra = true });
        assert_eq!(o.convert(v).unwrap(), hcl::value!({ a = "x", b = null }));
    }
}
