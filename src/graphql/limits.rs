//! What a GraphQL document may cost, decided before anything runs: its nesting (checked
//! on the raw text, before the parser recurses), its depth and database cost (from the
//! parsed document), and the strings it carries.
//!
//! Why not async-graphql's own `limit_depth` / `limit_complexity` with
//! `#[graphql(complexity = …)]`: its visitors count introspection fields like any other,
//! so the standard introspection query (GraphiQL, codegen, Apollo, Postman) cannot pass
//! a depth limit that still stops abuse; its cost of a connection cannot leave
//! `totalCount` out of the page multiplier; and it judges each request alone, while a
//! batch must be limited by the sum of its operations before any of them runs.

use std::collections::HashSet;

use async_graphql::Positioned;
use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, FragmentSpread, OperationDefinition, Selection,
    SelectionSet,
};
use async_graphql_value::{ConstValue, Name, Value, Variables};

/// The bounds a document must stay within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Deepest nesting of fields, not counting introspection.
    pub max_depth: usize,
    /// Largest cost of one request, or of a whole batch.
    pub max_complexity: usize,
    /// Whether `__schema` and `__type` may be asked for.
    pub introspection: bool,
}

/// Page size a connection is charged for when the query names none (the resolvers' default).
pub const DEFAULT_PAGE: u64 = 20;
/// The largest page a connection serves.
pub const MAX_PAGE: u64 = 100;
/// What `totalCount` costs: a `COUNT` reads as much as a page of a hundred rows.
pub const TOTAL_COUNT_COST: u64 = 100;
/// What a root field (a query or mutation of its own: a database round trip) costs
/// before its children; any other field costs 1.
pub const ROOT_FIELD_COST: u64 = 10;
/// Fields that are Relay connections: their `edges` and `nodes` are charged per row.
const CONNECTION_FIELDS: &[&str] = &["creditTransactions", "creditPurchases", "creditLots", "creditHolds"];
/// Deepest field nesting under an introspection root. The standard query (graphql-js
/// `getIntrospectionQuery`, `TypeRef` nine `ofType`s deep) reaches 15.
const MAX_INTROSPECTION_DEPTH: usize = 16;
/// Introspection roots (`__schema`, `__type`) allowed in one operation.
const MAX_INTROSPECTION_ROOTS: usize = 10;
/// Fields visited while measuring, fragments inlined: a bound on the measuring itself,
/// so fragments spread many times over cannot make it exponential.
const MAX_VISITS: usize = 50_000;

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Brackets nest deeper than any acceptable document needs.
    #[error("the query is nested deeper than {0} levels")]
    TooDeeplyNested(usize),
    /// Fields nest deeper than the depth limit.
    #[error("the query is {depth} fields deep; the limit is {max}")]
    TooDeep {
        /// The document's depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// The document would cost the database more than allowed.
    #[error(
        "the query costs {cost}; the limit is {max} (a connection costs its page size times its fields, totalCount {TOTAL_COUNT_COST})"
    )]
    TooComplex {
        /// The document's cost (saturating).
        cost: u64,
        /// The limit.
        max: usize,
    },
    /// An introspection query nested deeper than the standard one, or repeating itself.
    #[error("the introspection query is nested deeper than the standard introspection query")]
    IntrospectionTooDeep,
    /// Introspection is turned off on this server.
    #[error("introspection is disabled on this server")]
    IntrospectionDisabled,
    /// A fragment spreads itself (directly or not), or is spread but not defined.
    #[error("fragment {0} is undefined or spreads itself")]
    BadFragment(String),
    /// A string argument or variable holds a control character.
    #[error("string values must not contain control characters (found U+{0:04X})")]
    ControlCharacter(u32),
}

impl LimitError {
    /// Whether the error is about a value (`BAD_USER_INPUT`) rather than the shape of the
    /// document (`GRAPHQL_VALIDATION_FAILED`).
    pub fn is_bad_value(&self) -> bool {
        matches!(self, Self::ControlCharacter(_))
    }
}

/// The deepest nesting of `{`, `(` and `[` in a document, outside strings (block strings
/// included) and comments: one linear pass over the text, so it runs before the parser,
/// which recurses once per level of selections and values alike.
///
/// Where the text is not valid GraphQL (an unterminated string, say) this errs towards
/// counting more brackets, never fewer.
pub fn nesting_depth(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut at, mut depth, mut deepest) = (0usize, 0usize, 0usize);
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'{' | b'(' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b')' | b']' => depth = depth.saturating_sub(1),
            b'#' => {
                while bytes.get(at + 1).is_some_and(|&b| b != b'\n' && b != b'\r') {
                    at += 1;
                }
            }
            b'"' if bytes[at..].starts_with(b"\"\"\"") => {
                // A block string ends at the first `"""` not escaped as `\"""`.
                at += 3;
                loop {
                    let rest = &bytes[at.min(bytes.len())..];
                    if rest.is_empty() {
                        break;
                    } else if rest.starts_with(b"\\\"\"\"") {
                        at += 4;
                    } else if rest.starts_with(b"\"\"\"") {
                        at += 2;
                        break;
                    } else {
                        at += 1;
                    }
                }
            }
            b'"' => {
                // A string ends at an unescaped quote; it cannot span lines.
                at += 1;
                while let Some(&b) = bytes.get(at) {
                    match b {
                        b'\\' => at += 2,
                        b'"' => break,
                        b'\n' | b'\r' => {
                            at -= 1;
                            break;
                        }
                        _ => at += 1,
                    }
                }
            }
            _ => {}
        }
        at += 1;
    }
    deepest
}

/// What one operation costs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Deepest field nesting outside introspection.
    pub depth: usize,
    /// Database cost: every field 1, connection rows times their page size,
    /// `totalCount` [`TOTAL_COUNT_COST`]; introspection and `__typename` nothing.
    pub complexity: u64,
}

/// Measures the operation `operation_name` selects and checks it against `limits`.
/// A document whose operation cannot be selected costs nothing here: the executor
/// refuses it with its own error.
pub fn measure(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    limits: &DocumentLimits,
) -> Result<Cost, LimitError> {
    let Some(operation) = select_operation(document, operation_name) else {
        return Ok(Cost::default());
    };
    check_strings(document, operation, variables)?;
    let mut walk =
        Walk { document, operation, variables, limits, visits: 0, introspection_roots: 0, spreading: HashSet::new() };
    let measured = walk.selection_set(&operation.selection_set.node, Place::Root)?;
    let cost = Cost { depth: measured.depth, complexity: measured.cost };
    if cost.depth > limits.max_depth {
        return Err(LimitError::TooDeep { depth: cost.depth, max: limits.max_depth });
    }
    check_complexity(cost.complexity, limits)?;
    Ok(cost)
}

/// Refuses a cost (of one request or a batch's sum) over the limit.
pub fn check_complexity(complexity: u64, limits: &DocumentLimits) -> Result<(), LimitError> {
    if complexity > limits.max_complexity as u64 {
        return Err(LimitError::TooComplex { cost: complexity, max: limits.max_complexity });
    }
    Ok(())
}

fn select_operation<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(&operation.node),
        (DocumentOperations::Multiple(operations), Some(name)) => {
            operations.iter().find(|(key, _)| key.as_str() == name).map(|(_, op)| &op.node)
        }
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// Where a selection set sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The operation's own selection set.
    Root,
    /// Under an ordinary field.
    Data,
    /// Under an introspection root, this many fields below the operation.
    Introspection(usize),
}

/// A subtree's measure: its deepest ordinary nesting and its cost.
#[derive(Clone, Copy, Default)]
struct Measured {
    depth: usize,
    cost: u64,
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    variables: &'a Variables,
    limits: &'a DocumentLimits,
    visits: usize,
    introspection_roots: usize,
    /// Fragments being spread on the current path (a cycle is refused).
    spreading: HashSet<&'a str>,
}

impl<'a> Walk<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet, place: Place) -> Result<Measured, LimitError> {
        self.selections(set, place, &mut Vec::new())
    }

    /// Measures `set`; `path` holds the introspection field names above it, so that no
    /// list of the schema is nested in itself (`fields { type { fields …`), which the
    /// standard query never does.
    fn selections(
        &mut self,
        set: &'a SelectionSet,
        place: Place,
        path: &mut Vec<&'a str>,
    ) -> Result<Measured, LimitError> {
        let mut total = Measured::default();
        for selection in &set.items {
            let measured = match &selection.node {
                Selection::Field(field) => self.field(&field.node, place, path)?,
                Selection::InlineFragment(fragment) => {
                    self.selections(&fragment.node.selection_set.node, place, path)?
                }
                Selection::FragmentSpread(spread) => {
                    let (name, set) = self.enter(&spread.node)?;
                    let measured = self.selections(set, place, path);
                    self.spreading.remove(name);
                    measured?
                }
            };
            total.depth = total.depth.max(measured.depth);
            total.cost = total.cost.saturating_add(measured.cost);
        }
        Ok(total)
    }

    /// The fragment a spread names, marked as being spread (the caller unmarks it); a
    /// fragment that is not defined, or that spreads itself, is refused.
    fn enter(&mut self, spread: &'a FragmentSpread) -> Result<(&'a str, &'a SelectionSet), LimitError> {
        let name = spread.fragment_name.node.as_str();
        let fragment = self.document.fragments.get(name).ok_or_else(|| LimitError::BadFragment(name.to_owned()))?;
        if !self.spreading.insert(name) {
            return Err(LimitError::BadFragment(name.to_owned()));
        }
        Ok((name, &fragment.node.selection_set.node))
    }

    /// Measures one field in `place`.
    fn field(&mut self, field: &'a Field, place: Place, path: &mut Vec<&'a str>) -> Result<Measured, LimitError> {
        self.visits += 1;
        if self.visits > MAX_VISITS {
            return Err(LimitError::TooComplex { cost: u64::MAX, max: self.limits.max_complexity });
        }
        let name = field.name.node.as_str();
        let children = &field.selection_set.node;
        Ok(match place {
            Place::Introspection(level) => {
                if level + 1 > MAX_INTROSPECTION_DEPTH || (name != "ofType" && path.contains(&name)) {
                    return Err(LimitError::IntrospectionTooDeep);
                }
                path.push(name);
                let inner = self.selections(children, Place::Introspection(level + 1), path);
                path.pop();
                inner?;
                Measured::default()
            }
            _ if name == "__typename" => Measured::default(),
            Place::Root if name == "__schema" || name == "__type" => {
                if !self.limits.introspection {
                    return Err(LimitError::IntrospectionDisabled);
                }
                self.introspection_roots += 1;
                if self.introspection_roots > MAX_INTROSPECTION_ROOTS {
                    return Err(LimitError::IntrospectionTooDeep);
                }
                self.selections(children, Place::Introspection(1), &mut Vec::new())?;
                Measured::default()
            }
            _ if CONNECTION_FIELDS.contains(&name) => {
                let page = self.page_size(&field.arguments);
                let inner = self.connection(children, page)?;
                Measured { depth: inner.depth + 1, cost: inner.cost.saturating_add(base_cost(place)) }
            }
            _ => {
                let inner = self.selection_set(children, Place::Data)?;
                Measured { depth: inner.depth + 1, cost: inner.cost.saturating_add(base_cost(place)) }
            }
        })
    }

    /// A connection's children: rows (`edges`, `nodes`) charged once per row of the page,
    /// `totalCount` as a count, anything else (`pageInfo`) as itself.
    fn connection(&mut self, set: &'a SelectionSet, page: u64) -> Result<Measured, LimitError> {
        let mut total = Measured::default();
        for selection in &set.items {
            let measured = match &selection.node {
                Selection::Field(field) => match field.node.name.node.as_str() {
                    "edges" | "nodes" => {
                        let inner = self.selection_set(&field.node.selection_set.node, Place::Data)?;
                        Measured { depth: inner.depth + 1, cost: inner.cost.saturating_add(1).saturating_mul(page) }
                    }
                    "totalCount" => Measured { depth: 1, cost: TOTAL_COUNT_COST },
                    _ => self.field(&field.node, Place::Data, &mut Vec::new())?,
                },
                Selection::InlineFragment(fragment) => self.connection(&fragment.node.selection_set.node, page)?,
                Selection::FragmentSpread(spread) => {
                    let (name, set) = self.enter(&spread.node)?;
                    let measured = self.connection(set, page);
                    self.spreading.remove(name);
                    measured?
                }
            };
            total.depth = total.depth.max(measured.depth);
            total.cost = total.cost.saturating_add(measured.cost);
        }
        Ok(total)
    }

    /// The page a connection field asks for (`first`, else `last`), from a literal or a
    /// variable; the resolvers' default when it names none, at most [`MAX_PAGE`].
    fn page_size(&self, arguments: &[(Positioned<Name>, Positioned<Value>)]) -> u64 {
        let requested = ["first", "last"].iter().find_map(|wanted| {
            let (_, value) = arguments.iter().find(|(name, _)| name.node.as_str() == *wanted)?;
            match &value.node {
                Value::Number(number) => number.as_u64(),
                Value::Variable(variable) => match self.variable(variable) {
                    Some(ConstValue::Number(number)) => number.as_u64(),
                    _ => None,
                },
                _ => None,
            }
        });
        requested.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE)
    }

    /// A variable's value as the executor will see it: given, else its default.
    fn variable(&self, name: &Name) -> Option<&'a ConstValue> {
        self.variables.get(name).or_else(|| {
            self.operation
                .variable_definitions
                .iter()
                .find(|definition| definition.node.name.node == *name)
                .and_then(|definition| definition.node.default_value.as_ref())
                .map(|value| &value.node)
        })
    }
}

fn base_cost(place: Place) -> u64 {
    if place == Place::Root { ROOT_FIELD_COST } else { 1 }
}

/// Refuses control characters in every string the operation carries: its literal
/// arguments (in any field, fragment or default value) and its variables. Tab and
/// newline are allowed (descriptions may hold them) except in `ID` variables.
fn check_strings(
    document: &ExecutableDocument,
    operation: &OperationDefinition,
    variables: &Variables,
) -> Result<(), LimitError> {
    for definition in &operation.variable_definitions {
        let definition = &definition.node;
        let is_id =
            matches!(&innermost(&definition.var_type.node.base), BaseType::Named(name) if name.as_str() == "ID");
        if let Some(value) = variables.get(&definition.name.node) {
            check_const(value, is_id)?;
        }
        if let Some(default) = &definition.default_value {
            check_const(&default.node, is_id)?;
        }
    }
    check_set(&operation.selection_set.node)?;
    for fragment in document.fragments.values() {
        check_set(&fragment.node.selection_set.node)?;
    }
    Ok(())
}

fn innermost(base: &BaseType) -> &BaseType {
    match base {
        BaseType::List(inner) => innermost(&inner.base),
        named => named,
    }
}

fn check_set(set: &SelectionSet) -> Result<(), LimitError> {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => {
                for (_, value) in &field.node.arguments {
                    check_value(&value.node)?;
                }
                check_set(&field.node.selection_set.node)?;
            }
            Selection::InlineFragment(fragment) => check_set(&fragment.node.selection_set.node)?,
            Selection::FragmentSpread(_) => {}
        }
    }
    Ok(())
}

fn check_text(text: &str, strict: bool) -> Result<(), LimitError> {
    match text.chars().find(|&c| c.is_control() && (strict || (c != '\t' && c != '\n'))) {
        Some(c) => Err(LimitError::ControlCharacter(c as u32)),
        None => Ok(()),
    }
}

fn check_value(value: &Value) -> Result<(), LimitError> {
    match value {
        Value::String(text) => check_text(text, false),
        Value::List(items) => items.iter().try_for_each(check_value),
        Value::Object(fields) => fields.values().try_for_each(check_value),
        _ => Ok(()),
    }
}

fn check_const(value: &ConstValue, strict: bool) -> Result<(), LimitError> {
    match value {
        ConstValue::String(text) => check_text(text, strict),
        ConstValue::List(items) => items.iter().try_for_each(|item| check_const(item, strict)),
        ConstValue::Object(fields) => fields.values().try_for_each(|item| check_const(item, strict)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DocumentLimits = DocumentLimits { max_depth: 12, max_complexity: 2_000, introspection: true };

    fn cost(query: &str) -> Result<Cost, LimitError> {
        let document = async_graphql::parser::parse_query(query).expect("parses");
        measure(&document, None, &Variables::default(), &LIMITS)
    }

    #[test]
    fn nesting_ignores_brackets_in_strings_block_strings_and_comments() {
        assert_eq!(nesting_depth("{ a { b } }"), 2);
        assert_eq!(nesting_depth("{ a(x: \"{{{{\\\"{{\") # {{{{\n }"), 2);
        assert_eq!(nesting_depth(&"{a".repeat(1000)), 1000);
        assert_eq!(nesting_depth(r#"{ a(x: """ {{{ \""" {{ """) }"#), 2);
    }

    #[test]
    fn a_quote_inside_a_block_string_does_not_hide_what_follows() {
        let deep = format!(r#"{{ a(x: """a"b""", y: {}1{}) }}"#, "[".repeat(5_000), "]".repeat(5_000));
        assert!(nesting_depth(&deep) > 5_000);
        let unterminated = format!("{{ a(x: \"abc\n{} ) }}", "[".repeat(100));
        assert!(nesting_depth(&unterminated) > 100);
    }

    #[test]
    fn connections_cost_their_page_and_total_count_a_hundred() {
        let small = cost("{ creditTransactions(first: 10) { edges { node { id amount } } } }").expect("ok");
        assert_eq!(small.complexity, 10 + 10 * (1 + 1 + 2));
        let default = cost("{ creditTransactions { nodes { id } } }").expect("ok");
        assert_eq!(default.complexity, 10 + 20 * 2);
        let counted = cost("{ creditTransactions(first: 100) { totalCount } }").expect("ok");
        assert_eq!(counted.complexity, 110);
        let full_page = "{ creditTransactions(first: 100) { totalCount edges { cursor node { id kind amount balanceAfter description createdAt } } pageInfo { hasNextPage endCursor } } }";
        assert!(cost(full_page).is_ok(), "a full page with its count fits the default limit");
        let many_roots: String = (0..300).map(|i| format!("a{i}: creditBalance {{ balance }} ")).collect();
        assert!(matches!(cost(&format!("{{ {many_roots} }}")), Err(LimitError::TooComplex { .. })));
        let flood: String =
            (0..120).map(|i| format!("a{i}: creditTransactions(first: 100) {{ totalCount }} ")).collect();
        assert!(matches!(cost(&format!("{{ {flood} }}")), Err(LimitError::TooComplex { .. })));
    }

    #[test]
    fn introspection_is_free_but_bounded() {
        let standard = include_str!("../../tests/api/introspection_query.graphql");
        assert_eq!(cost(standard).expect("the standard query passes").complexity, 0);
        let nested = "{ __type(name: \"Query\") { fields { type { fields { type { fields { name } } } } } } }";
        assert_eq!(cost(nested), Err(LimitError::IntrospectionTooDeep));
        let off = DocumentLimits { introspection: false, ..LIMITS };
        let document = async_graphql::parser::parse_query("{ __schema { types { name } } }").expect("parses");
        assert_eq!(measure(&document, None, &Variables::default(), &off), Err(LimitError::IntrospectionDisabled));
    }

    #[test]
    fn depth_counts_fields_through_fragments() {
        let query = "query { organization { ...A } } fragment A on Organization { balance { balance } }";
        assert_eq!(cost(query).expect("ok").depth, 3);
        let cycle = "query { organization { ...A } } fragment A on Organization { ...A }";
        assert!(matches!(cost(cycle), Err(LimitError::BadFragment(_))));
    }

    #[test]
    fn control_characters_are_refused_in_literals_and_variables() {
        assert_eq!(cost("{ node(id: \"a\\u0000b\") { id } }"), Err(LimitError::ControlCharacter(0)));
        assert!(cost("{ creditTransactions(filter: { referenceId: \"a\\tb\" }) { totalCount } }").is_ok());
        let document = async_graphql::parser::parse_query("query($id: ID!) { node(id: $id) { id } }").expect("parses");
        let variables = Variables::from_json(serde_json::json!({ "id": "a\tb" }));
        assert_eq!(measure(&document, None, &variables, &LIMITS), Err(LimitError::ControlCharacter(9)));
    }

    /// GraphQL values the parser accepts: strings and block strings whose content holds
    /// quotes, escapes and brackets, and lists nested up to thousands deep.
    fn value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let content = proptest::collection::vec(
            prop_oneof![Just("a"), Just("\""), Just("\\\"\"\""), Just("["), Just("{"), Just("\\"), Just("#")],
            0..8,
        )
        .prop_map(|pieces| pieces.concat());
        let block = content
            .clone()
            .prop_filter("no unescaped closing", |c| {
                !c.replace("\\\"\"\"", "").contains("\"\"\"") && !c.ends_with('"') && !c.ends_with('\\')
            })
            .prop_map(|c| format!("\"\"\"{c}\"\"\""));
        let string = content.prop_map(|c| serde_json::to_string(&c).unwrap_or_default());
        let deep = (1usize..3_000).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n)));
        prop_oneof![block, string, deep]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// A document the scanner lets through parses within a small stack: the scanner
        /// never counts fewer levels than the parser recurses, whatever the strings hold.
        #[test]
        fn the_scanner_never_lets_the_parser_recurse_past_its_bound(values in proptest::collection::vec(value(), 1..6)) {
            let arguments: Vec<String> = values.iter().enumerate().map(|(i, v)| format!("a{i}: {v}")).collect();
            let text = format!("{{ f({}) }}", arguments.join(", "));
            if nesting_depth(&text) <= 28 {
                // 256 KiB of stack is far below a worker thread's 2 MiB: an under-count
                // that let a deep document through would overflow here and abort the test.
                let parsed = std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn(move || async_graphql::parser::parse_query(&text).is_ok())
                    .expect("thread")
                    .join();
                proptest::prop_assert_eq!(parsed.ok(), Some(true));
            }
        }

        /// The scanner sees exactly the nesting written outside strings.
        #[test]
        fn the_scanner_counts_every_bracket_outside_strings(depth in 0usize..200, string in "[a-z\"{}\\[\\]]{0,8}") {
            let quoted = serde_json::to_string(&string).expect("JSON string is a GraphQL string");
            let text = format!("{{ f(x: {quoted}, y: {}1{}) }}", "[".repeat(depth), "]".repeat(depth));
            proptest::prop_assert_eq!(nesting_depth(&text), depth + 2);
        }
    }
}
