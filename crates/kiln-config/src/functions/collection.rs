//! Collection and type-conversion functions: length, contains, concat, merge, lookup, keys, values, flatten,
//! distinct, compact, coalesce, coalescelist, element, index, slice, reverse, sort, range, zipmap, setunion,
//! alltrue, anytrue, tolist, toset, tomap, tostring, tonumber, tobool.

use hcl::{Map, Value};

use super::{
    arg_bool, arg_int, arg_list, arg_map, arg_num, arg_str, arity, failed, int, parse_number,
    type_err, val_eq, Func, FuncContext, Res,
};

pub(super) const FUNCS: &[(&str, Func)] = &[
    ("length", length),
    ("contains", contains),
    ("concat", concat),
    ("merge", merge),
    ("lookup", lookup),
    ("keys", keys),
    ("values", values),
    ("flatten", flatten),
    ("distinct", distinct),
    ("compact", compact),
    ("coalesce", coalesce),
    ("coalescelist", coalescelist),
    ("element", element),
    ("index", index),
    ("slice", slice),
    ("reverse", reverse),
    ("sort", sort),
    ("range", range),
    ("zipmap", zipmap),
    ("setunion", setunion),
    ("setintersection", setintersection),
    ("setsubtract", setsubtract),
    ("setproduct", setproduct),
    ("chunklist", chunklist),
    ("sum", sum),
    ("one", one),
    ("transpose", transpose),
    ("alltrue", alltrue),
    ("anytrue", anytrue),
    ("tolist", tolist),
    ("toset", toset),
    ("tomap", tomap),
    ("tostring", tostring),
    ("tonumber", tonumber),
    ("tobool", tobool),
];

/// `length(x)`: characters of a string, elements of a list, attributes of an object.
fn length(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    match &args[0] {
        Value::String(s) => Ok(int(s.chars().count() as i64)),
        Value::Array(a) => Ok(int(a.len() as i64)),
        Value::Object(o) => Ok(int(o.len() as i64)),
        Value::Null => Err(failed(name, "argument must not be null")),
        other => Err(type_err(name, 0, "string, list or map", other)),
    }
}

fn contains(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let list = arg_list(name, 0, &args[0])?;
    Ok(Value::Bool(list.iter().any(|e| val_eq(e, &args[1]))))
}

fn concat(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        out.extend(arg_list(name, i, a)?);
    }
    Ok(Value::Array(out))
}

/// `merge(maps...)`: later keys win; null arguments are skipped.
fn merge(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    let mut out = Map::new();
    for (i, a) in args.iter().enumerate() {
        match a {
            Value::Null => {}
            Value::Object(o) => {
                for (k, v) in o {
                    out.insert(k.clone(), v.clone());
                }
            }
            other => return Err(type_err(name, i, "map or object", other)),
        }
    }
    Ok(Value::Object(out))
}

/// `lookup(map, key, default)`; without a default, a missing key is an error.
fn lookup(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(3))?;
    let map = arg_map(name, 0, &args[0])?;
    let key = arg_str(name, 1, &args[1])?;
    match map.get(&key) {
        Some(v) => Ok(v.clone()),
        None => match args.get(2) {
            Some(d) => Ok(d.clone()),
            None => Err(failed(
                name,
                format!("the given map has no key \"{key}\" and no default was given"),
            )),
        },
    }
}

fn sorted_map(name: &str, v: &Value) -> Result<Vec<(String, Value)>, super::FuncError> {
    let mut items: Vec<(String, Value)> = arg_map(name, 0, v)?.into_iter().collect();
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items)
}

fn keys(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::Array(
        sorted_map(name, &args[0])?
            .into_iter()
            .map(|(k, _)| Value::String(k))
            .collect(),
    ))
}

fn values(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::Array(
        sorted_map(name, &args[0])?
            .into_iter()
            .map(|(_, v)| v)
            .collect(),
    ))
}

fn flatten_into(v: Vec<Value>, out: &mut Vec<Value>) {
    for e in v {
        match e {
            Value::Array(inner) => flatten_into(inner, out),
            other => out.push(other),
        }
    }
}

fn flatten(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let mut out = Vec::new();
    flatten_into(arg_list(name, 0, &args[0])?, &mut out);
    Ok(Value::Array(out))
}

fn dedup(items: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for e in items {
        if !out.iter().any(|o| val_eq(o, &e)) {
            out.push(e);
        }
    }
    out
}

fn distinct(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::Array(dedup(arg_list(name, 0, &args[0])?)))
}

/// `compact(list)`: drop empty strings and nulls.
fn compact(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let mut out = Vec::new();
    for e in arg_list(name, 0, &args[0])? {
        match e {
            Value::Null => {}
            Value::String(ref s) if s.is_empty() => {}
            Value::Array(_) | Value::Object(_) => {
                return Err(failed(name, "list elements must be strings"));
            }
            other => out.push(Value::String(arg_str(name, 0, &other)?)),
        }
    }
    Ok(Value::Array(out))
}

/// `coalesce(vals...)`: the first argument that is neither null nor "".
fn coalesce(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    for a in args {
        match a {
            Value::Null => {}
            Value::String(ref s) if s.is_empty() => {}
            other => return Ok(other),
        }
    }
    Err(failed(name, "no non-null, non-empty-string arguments"))
}

/// `coalescelist(lists...)`: the first non-empty list.
fn coalescelist(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    for (i, a) in args.iter().enumerate() {
        if a.is_null() {
            continue;
        }
        let l = arg_list(name, i, a)?;
        if !l.is_empty() {
            return Ok(Value::Array(l));
        }
    }
    Err(failed(name, "no non-null arguments"))
}

/// `element(list, index)`: wraps around.
fn element(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let list = arg_list(name, 0, &args[0])?;
    let i = arg_int(name, 1, &args[1])?;
    if list.is_empty() {
        return Err(failed(
            name,
            "cannot use element function with an empty list",
        ));
    }
    if i < 0 {
        return Err(failed(
            name,
            "cannot use element function with a negative index",
        ));
    }
    Ok(list[(i as usize) % list.len()].clone())
}

fn index(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let list = arg_list(name, 0, &args[0])?;
    match list.iter().position(|e| val_eq(e, &args[1])) {
        Some(p) => Ok(int(p as i64)),
        None => Err(failed(name, "item not found")),
    }
}

fn slice(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 3, Some(3))?;
    let list = arg_list(name, 0, &args[0])?;
    let start = arg_int(name, 1, &args[1])?;
    let end = arg_int(name, 2, &args[2])?;
    if start < 0 {
        return Err(failed(name, "the start index must not be negative"));
    }
    if end > list.len() as i64 {
        return Err(failed(
            name,
            "the end index must not be greater than the length of the list",
        ));
    }
    if start > end {
        return Err(failed(
            name,
            "the start index must not be greater than the end index",
        ));
    }
    Ok(Value::Array(list[start as usize..end as usize].to_vec()))
}

fn reverse(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let mut l = arg_list(name, 0, &args[0])?;
    l.reverse();
    Ok(Value::Array(l))
}

/// `sort(list)`: lexicographic sort of strings.
fn sort(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let mut strs = Vec::new();
    for e in arg_list(name, 0, &args[0])? {
        if e.is_null() {
            return Err(failed(
                name,
                "given list element is null; a null cannot be sorted",
            ));
        }
        strs.push(arg_str(name, 0, &e)?);
    }
    strs.sort();
    Ok(Value::Array(strs.into_iter().map(Value::String).collect()))
}

/// `range(limit)`, `range(start, limit)`, `range(start, limit, step)`.
fn range(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(3))?;
    let nums: Vec<f64> = args
        .iter()
        .enumerate()
        .map(|(i, a)| arg_num(name, i, a).map(|n| n.as_f64().unwrap_or(0.0)))
        .collect::<Result<_, _>>()?;
    let (start, limit, step) = match nums.as_slice() {
        [l] => (0.0, *l, 1.0),
        [s, l] => (*s, *l, if l >= s { 1.0 } else { -1.0 }),
        [s, l, st] => (*s, *l, *st),
        _ => unreachable!("arity checked"),
    };
    if step == 0.0 {
        return Err(failed(name, "step must not be zero"));
    }
    if (step > 0.0 && limit < start) || (step < 0.0 && limit > start) {
        return Err(failed(
            name,
            "step must be positive when start < limit and negative when start > limit",
        ));
    }
    let mut out = Vec::new();
    let mut x = start;
    while (step > 0.0 && x < limit) || (step < 0.0 && x > limit) {
        if out.len() >= 1024 {
            return Err(failed(name, "more than 1024 values were generated; either decrease the difference between start and limit or use a smaller step"));
        }
        out.push(super::float(x).map_err(|m| failed(name, m))?);
        x += step;
    }
    Ok(Value::Array(out))
}

fn zipmap(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let ks = arg_list(name, 0, &args[0])?;
    let vs = arg_list(name, 1, &args[1])?;
    if ks.len() != vs.len() {
        return Err(failed(
            name,
            format!(
                "number of keys ({}) does not match number of values ({})",
                ks.len(),
                vs.len()
            ),
        ));
    }
    let mut out = Map::new();
    for (k, v) in ks.iter().zip(vs) {
        out.insert(arg_str(name, 0, k)?, v);
    }
    Ok(Value::Object(out))
}

fn setunion(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let mut all = Vec::new();
    for (i, a) in args.iter().enumerate() {
        all.extend(arg_list(name, i, a)?);
    }
    Ok(Value::Array(dedup(all)))
}

fn setintersection(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let first = dedup(arg_list(name, 0, &args[0])?);
    let others: Vec<Vec<Value>> = args
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, a)| arg_list(name, i, a))
        .collect::<Result<_, _>>()?;
    Ok(Value::Array(
        first
            .into_iter()
            .filter(|e| others.iter().all(|o| o.iter().any(|x| val_eq(x, e))))
            .collect(),
    ))
}

fn setsubtract(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let a = dedup(arg_list(name, 0, &args[0])?);
    let b = arg_list(name, 1, &args[1])?;
    Ok(Value::Array(
        a.into_iter()
            .filter(|e| !b.iter().any(|x| val_eq(x, e)))
            .collect(),
    ))
}

/// `setproduct(sets...)`: every combination, as lists.
fn setproduct(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, None)?;
    let mut acc: Vec<Vec<Value>> = vec![Vec::new()];
    for (i, a) in args.iter().enumerate() {
        let items = arg_list(name, i, a)?;
        // rows × columns: every row is copied once per new column
        super::check_size(
            name,
            acc.len() as u128 * items.len() as u128 * (i as u128 + 1),
            super::MAX_ITEMS,
            "elements",
        )?;
        let mut next = Vec::with_capacity(acc.len() * items.len());
        for prefix in &acc {
            for it in &items {
                let mut row = prefix.clone();
                row.push(it.clone());
                next.push(row);
            }
        }
        acc = next;
    }
    Ok(Value::Array(acc.into_iter().map(Value::Array).collect()))
}

/// `chunklist(list, size)`: consecutive chunks; size 0 = one chunk.
fn chunklist(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 2, Some(2))?;
    let list = arg_list(name, 0, &args[0])?;
    let size = arg_int(name, 1, &args[1])?;
    if size < 0 {
        return Err(failed(name, "the size argument must be positive"));
    }
    if size == 0 {
        return Ok(Value::Array(vec![Value::Array(list)]));
    }
    Ok(Value::Array(
        list.chunks(size as usize)
            .map(|c| Value::Array(c.to_vec()))
            .collect(),
    ))
}

fn sum(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let list = arg_list(name, 0, &args[0])?;
    if list.is_empty() {
        return Err(failed(name, "cannot sum an empty list"));
    }
    let mut total = hcl::Number::from(0);
    for e in &list {
        total = total + arg_num(name, 0, e)?;
    }
    Ok(Value::Number(total))
}

/// `one(list)`: null for an empty list, the element for a one-element list, an error otherwise.
fn one(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let list = arg_list(name, 0, &args[0])?;
    match list.len() {
        0 => Ok(Value::Null),
        1 => Ok(list.into_iter().next().unwrap_or(Value::Null)),
        n => Err(failed(
            name,
            format!(
                "must be a list, set, or tuple value with either zero or one elements, got {n}"
            ),
        )),
    }
}

/// `transpose(map of lists)`: swap keys and values.
fn transpose(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    let mut out: Map<String, Value> = Map::new();
    for (k, v) in sorted_map(name, &args[0])? {
        for e in arg_list(name, 0, &v)? {
            let key = arg_str(name, 0, &e)?;
            match out.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                Value::Array(a) => a.push(Value::String(k.clone())),
                _ => unreachable!("inserted as array"),
            }
        }
    }
    out.sort_keys();
    Ok(Value::Object(out))
}

fn bools(name: &str, v: &Value) -> Result<Vec<bool>, super::FuncError> {
    arg_list(name, 0, v)?
        .iter()
        .map(|e| match e {
            Value::Null => Ok(false),
            other => arg_bool(name, 0, other),
        })
        .collect()
}

fn alltrue(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::Bool(bools(name, &args[0])?.into_iter().all(|b| b)))
}

fn anytrue(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    Ok(Value::Bool(bools(name, &args[0])?.into_iter().any(|b| b)))
}

fn tolist(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    match &args[0] {
        Value::Null => Ok(Value::Null),
        other => Ok(Value::Array(arg_list(name, 0, other)?)),
    }
}

/// `toset(list)`: duplicates removed; a set of strings is ordered lexicographically, as in cty.
fn toset(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    if args[0].is_null() {
        return Ok(Value::Null);
    }
    let mut items = dedup(arg_list(name, 0, &args[0])?);
    if items.iter().all(|e| matches!(e, Value::String(_))) {
        items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    Ok(Value::Array(items))
}

fn tomap(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    match &args[0] {
        Value::Null => Ok(Value::Null),
        other => Ok(Value::Object(arg_map(name, 0, other)?)),
    }
}

fn tostring(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    match &args[0] {
        Value::Null => Ok(Value::Null),
        other => Ok(Value::String(arg_str(name, 0, other)?)),
    }
}

fn tonumber(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    match &args[0] {
        Value::Null => Ok(Value::Null),
        Value::String(s) => parse_number(s).map(Value::Number).ok_or_else(|| {
            failed(
                name,
                format!("cannot convert \"{s}\" to number: a number is required"),
            )
        }),
        other => Ok(Value::Number(arg_num(name, 0, other)?)),
    }
}

fn tobool(name: &str, args: Vec<Value>, _: &FuncContext) -> Res {
    arity(name, &args, 1, Some(1))?;
    match &args[0] {
        Value::Null => Ok(Value::Null),
        Value::String(s) if s != "true" && s != "false" => {
            Err(failed(name, format!("cannot convert \"{s}\" to bool: only the strings \"true\" or \"false\" are allowed")))
        }
        other => Ok(Value::Bool(arg_bool(name, 0, other)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;

    #[test]
    fn length_cases() {
        ok("length", &["\"héllo\""], "5");
        ok("length", &["[1, 2, 3]"], "3");
        ok("length", &["{a = 1}"], "1");
        ok("length", &["[]"], "0");
        err("length", &["1"]);
        err("length", &["null"]);
    }

    #[test]
    fn contains_concat() {
        ok("contains", &["[\"a\", \"b\"]", "\"a\""], "true");
        ok("contains", &["[\"a\", \"b\"]", "\"c\""], "false");
        ok("contains", &["[1, 2]", "2"], "true");
        err("contains", &["\"abc\"", "\"a\""]);
        ok(
            "concat",
            &["[\"a\"]", "[\"b\", \"c\"]"],
            "[\"a\", \"b\", \"c\"]",
        );
        ok("concat", &["[]"], "[]");
        err("concat", &["\"a\""]);
        err("concat", &[]);
    }

    #[test]
    fn merge_lookup() {
        ok(
            "merge",
            &["{a = 1, b = 2}", "{b = 3}", "null"],
            "{a = 1, b = 3}",
        );
        ok("merge", &[], "{}");
        err("merge", &["[1]"]);
        ok("lookup", &["{a = \"x\"}", "\"a\"", "\"d\""], "\"x\"");
        ok("lookup", &["{a = \"x\"}", "\"b\"", "\"d\""], "\"d\"");
        ok("lookup", &["{a = \"x\"}", "\"a\""], "\"x\"");
        err("lookup", &["{a = \"x\"}", "\"b\""]);
        err("lookup", &["[1]", "\"a\"", "1"]);
    }

    #[test]
    fn keys_values() {
        ok("keys", &["{b = 1, a = 2}"], "[\"a\", \"b\"]");
        ok("values", &["{b = 1, a = 2}"], "[2, 1]");
        err("keys", &["[1]"]);
        err("values", &["\"a\""]);
    }

    #[test]
    fn flatten_distinct_compact() {
        ok(
            "flatten",
            &["[[\"a\", \"b\"], [], [\"c\", [\"d\"]]]"],
            "[\"a\", \"b\", \"c\", \"d\"]",
        );
        err("flatten", &["\"a\""]);
        ok(
            "distinct",
            &["[\"a\", \"b\", \"a\", \"c\"]"],
            "[\"a\", \"b\", \"c\"]",
        );
        err("distinct", &["{}"]);
        ok("compact", &["[\"a\", \"\", null, \"b\"]"], "[\"a\", \"b\"]");
        err("compact", &["[[1]]"]);
    }

    #[test]
    fn coalesce_cases() {
        ok("coalesce", &["null", "\"\"", "\"b\""], "\"b\"");
        ok("coalesce", &["1", "2"], "1");
        err("coalesce", &["null", "\"\""]);
        err("coalesce", &[]);
        ok("coalescelist", &["[]", "[\"a\"]"], "[\"a\"]");
        err("coalescelist", &["[]", "[]"]);
        err("coalescelist", &["\"a\""]);
    }

    #[test]
    fn element_index_slice() {
        ok("element", &["[\"a\", \"b\", \"c\"]", "1"], "\"b\"");
        ok("element", &["[\"a\", \"b\", \"c\"]", "3"], "\"a\"");
        err("element", &["[]", "0"]);
        err("element", &["[\"a\"]", "-1"]);
        ok("index", &["[\"a\", \"b\"]", "\"b\""], "1");
        err("index", &["[\"a\"]", "\"z\""]);
        ok(
            "slice",
            &["[\"a\", \"b\", \"c\", \"d\"]", "1", "3"],
            "[\"b\", \"c\"]",
        );
        err("slice", &["[\"a\"]", "0", "2"]);
        err("slice", &["[\"a\", \"b\"]", "2", "1"]);
    }

    #[test]
    fn reverse_sort_range() {
        ok("reverse", &["[1, 2, 3]"], "[3, 2, 1]");
        err("reverse", &["1"]);
        ok(
            "sort",
            &["[\"e\", \"d\", \"a\", \"x\"]"],
            "[\"a\", \"d\", \"e\", \"x\"]",
        );
        err("sort", &["[null]"]);
        ok("range", &["3"], "[0, 1, 2]");
        ok("range", &["1", "4"], "[1, 2, 3]");
        ok("range", &["4", "1"], "[4, 3, 2]");
        ok("range", &["0", "1", "0.5"], "[0, 0.5]");
        ok("range", &["0"], "[]");
        err("range", &["0", "5", "0"]);
        err("range", &["0", "5", "-1"]);
        err("range", &["2000"]);
    }

    #[test]
    fn zipmap_sets() {
        ok("zipmap", &["[\"a\", \"b\"]", "[1, 2]"], "{a = 1, b = 2}");
        err("zipmap", &["[\"a\"]", "[1, 2]"]);
        ok(
            "setunion",
            &["[\"a\", \"b\"]", "[\"b\", \"c\"]"],
            "[\"a\", \"b\", \"c\"]",
        );
        err("setunion", &["1"]);
        ok(
            "setintersection",
            &["[\"a\", \"b\"]", "[\"b\", \"c\"]"],
            "[\"b\"]",
        );
    }

    #[test]
    fn set_ops_and_chunks() {
        ok(
            "setsubtract",
            &["[\"a\", \"b\", \"c\"]", "[\"a\", \"c\"]"],
            "[\"b\"]",
        );
        err("setsubtract", &["[]"]);
        ok(
            "setproduct",
            &["[\"a\", \"b\"]", "[1, 2]"],
            "[[\"a\", 1], [\"a\", 2], [\"b\", 1], [\"b\", 2]]",
        );
        ok("setproduct", &["[\"a\"]", "[]"], "[]");
        err("setproduct", &["1"]);
        ok(
            "chunklist",
            &["[\"a\", \"b\", \"c\"]", "2"],
            "[[\"a\", \"b\"], [\"c\"]]",
        );
        ok("chunklist", &["[1]", "0"], "[[1]]");
        err("chunklist", &["[1]", "-1"]);
        ok("sum", &["[1, 2.5, \"3\"]"], "6.5");
        err("sum", &["[]"]);
        err("sum", &["[\"x\"]"]);
        ok("one", &["[]"], "null");
        ok("one", &["[\"a\"]"], "\"a\"");
        err("one", &["[1, 2]"]);
        ok(
            "transpose",
            &["{a = [\"1\", \"2\"], b = [\"2\", \"3\"]}"],
            "{\"1\" = [\"a\"], \"2\" = [\"a\", \"b\"], \"3\" = [\"b\"]}",
        );
        err("transpose", &["{a = \"x\"}"]);
    }

    #[test]
    fn all_any() {
        ok("alltrue", &["[true, \"true\"]"], "true");
        ok("alltrue", &["[]"], "true");
        ok("alltrue", &["[true, false]"], "false");
        ok("anytrue", &["[false, true]"], "true");
        ok("anytrue", &["[]"], "false");
        err("alltrue", &["[\"yes\"]"]);
        err("anytrue", &["true"]);
    }

    #[test]
    fn conversions() {
        ok("tolist", &["[1]"], "[1]");
        err("tolist", &["\"a\""]);
        ok("toset", &["[\"b\", \"a\", \"b\"]"], "[\"a\", \"b\"]");
        err("toset", &["{}"]);
        ok("tomap", &["{a = 1}"], "{a = 1}");
        err("tomap", &["[1]"]);
        ok("tostring", &["1"], "\"1\"");
        ok("tostring", &["true"], "\"true\"");
        ok("tostring", &["null"], "null");
        err("tostring", &["[]"]);
        ok("tonumber", &["\"42\""], "42");
        ok("tonumber", &["\"1.5\""], "1.5");
        err("tonumber", &["\"abc\""]);
        ok("tobool", &["\"false\""], "false");
        err("tobool", &["\"no\""]);
        err("tobool", &["1"]);
    }
}
