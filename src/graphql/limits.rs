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
//!
//! Work per document is linear in its size, whatever its fragments do: the operation is
//! selected before any fragment is walked, every fragment is walked once for the
//! document's expansion and at most once per kind of place for the cost (its measure
//! remembered), and spreads count as visits like fields. async-graphql's own checks
//! (`check_recursive_depth`, `check_max_directives`, the validation visitors) follow
//! every spread on every path without remembering fragments, and cannot be turned off;
//! they are kept (their messages are the ones clients know) and fed only documents whose
//! expansion this module has bounded, so their work is bounded too.

use std::collections::{HashMap, HashSet};

use async_graphql::Positioned;
use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, FragmentSpread, OperationDefinition, OperationType,
    Selection, SelectionSet,
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

impl DocumentLimits {
    /// The bounds the server's configured limits set.
    pub fn of(limits: &crate::config::Limits) -> Self {
        Self {
            max_depth: limits.query_depth,
            max_complexity: limits.query_complexity,
            introspection: limits.introspection,
        }
    }
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
const CONNECTION_FIELDS: &[&str] = &[
    "creditTransactions",
    "creditPurchases",
    "creditLots",
    "creditHolds",
    "webhookEndpoints",
    "webhookEvents",
    "webhookDeliveries",
    "creditTopUps",
    "auditEvents",
];
/// Deepest field nesting under an introspection root. The standard query (graphql-js
/// `getIntrospectionQuery`, `TypeRef` nine `ofType`s deep) reaches 15.
const MAX_INTROSPECTION_DEPTH: usize = 16;
/// Introspection roots (`__schema`, `__type`) allowed in one operation.
const MAX_INTROSPECTION_ROOTS: usize = 10;
/// What a field that reads an organization's lots costs (`nextExpiration`, a `lot`):
/// as much as a page of lots, since it may read every open one.
pub const LOT_READ_COST: u64 = DEFAULT_PAGE;
/// Fields charged [`LOT_READ_COST`]; `creditLots` is a connection and pays its page.
const LOT_READING_FIELDS: &[&str] = &["nextExpiration", "lot"];
/// What a usage report costs (`creditUsage`): it reads as much as a `COUNT`.
pub const REPORT_COST: u64 = TOTAL_COUNT_COST;
/// The most selections a document may expand to, summed over its selection sets with
/// fragments inlined (see [`Expansion`]): bounds what every later check walks. The
/// standard introspection query needs under a tenth of it.
const MAX_EXPANSION: u64 = 20_000;
/// The deepest nesting of selection sets, spreads included, the expansion walk follows
/// (async-graphql refuses documents past 32 anyway): bounds its recursion.
const MAX_LEVELS: usize = 64;

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
    /// The document expands, fragments inlined, to more selections than any check may walk.
    #[error("the document expands to more than {0} selections once its fragments are inlined")]
    TooManySelections(u64),
    /// No operation of the document can be selected (several and no name, or an unknown one).
    #[error("{0}")]
    NoOperation(String),
    /// A string argument or variable holds a control character.
    #[error("string values must not contain control characters (found U+{0:04X})")]
    ControlCharacter(u32),
}

impl LimitError {
    /// Whether the error is about a value (`BAD_USER_INPUT`) rather than the shape of the
    /// document (`GRAPHQL_VALIDATION_FAILED`).
    pub fn is_bad_value(&self) -> bool {
        matches!(self, Self::ControlCharacter(_) | Self::NoOperation(_))
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

/// The operation a document selects, and what it costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Its name (none for an anonymous operation).
    pub name: Option<Name>,
    /// Query, mutation or subscription.
    pub kind: OperationType,
    /// Deepest field nesting outside introspection.
    pub depth: usize,
    /// Database cost: every field 1, connection rows times their page size,
    /// `totalCount` [`TOTAL_COUNT_COST`], lot-reading fields [`LOT_READ_COST`],
    /// `creditUsage` [`REPORT_COST`];
    /// introspection and `__typename` nothing.
    pub complexity: u64,
}

/// Measures the operation `operation_name` selects and checks it against `limits`.
///
/// In this order, so that no step does more than linear work on what the previous one
/// let through: the operation is selected (or the document refused) before any fragment
/// is walked; the whole document's expansion is bounded (see [`Expansion`]); then the
/// selected operation is measured with each fragment's measure remembered.
pub fn measure(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    limits: &DocumentLimits,
) -> Result<Cost, LimitError> {
    measure_counting(document, operation_name, variables, limits, &mut 0)
}

/// [`measure`], adding the selections it visits to `visits` (its own work, for tests).
fn measure_counting(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    limits: &DocumentLimits,
    visits: &mut usize,
) -> Result<Cost, LimitError> {
    let (name, operation) = select_operation(document, operation_name)?;
    let mut expansion = Expansion { document, sizes: HashMap::new(), walking: HashSet::new(), work: 0, visits: 0 };
    let expanded = expansion.document();
    *visits += expansion.visits;
    expanded?;
    check_strings(document, operation, variables)?;
    let mut walk =
        Walk { document, operation, variables, limits, visits: 0, spreading: HashSet::new(), memo: HashMap::new() };
    let measured = walk.selections(&operation.selection_set.node, Place::Root, &mut Vec::new());
    *visits += walk.visits;
    let measured = measured?;
    if measured.introspection_roots > MAX_INTROSPECTION_ROOTS {
        return Err(LimitError::IntrospectionTooDeep);
    }
    let cost = Cost { name: name.cloned(), kind: operation.ty, depth: measured.depth, complexity: measured.cost };
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

/// The operation that will run, with its name, or the executor's own words for why none
/// can.
fn select_operation<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Result<(Option<&'a Name>, &'a OperationDefinition), LimitError> {
    match (&document.operations, operation_name) {
        // async-graphql knows an anonymous operation by no name at all.
        (DocumentOperations::Single(_), Some(name)) => {
            Err(LimitError::NoOperation(format!(r#"Unknown operation named "{name}""#)))
        }
        (DocumentOperations::Single(operation), None) => Ok((None, &operation.node)),
        (DocumentOperations::Multiple(operations), Some(name)) => operations
            .iter()
            .find(|(key, _)| key.as_str() == name)
            .map(|(key, op)| (Some(key), &op.node))
            .ok_or_else(|| LimitError::NoOperation(format!(r#"Unknown operation named "{name}""#))),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => operations
            .iter()
            .next()
            .map(|(key, op)| (Some(key), &op.node))
            .ok_or_else(|| LimitError::NoOperation("Operation name required in request.".to_owned())),
        (DocumentOperations::Multiple(_), None) => {
            Err(LimitError::NoOperation("Operation name required in request.".to_owned()))
        }
    }
}

/// What async-graphql's own checks will do with a document, bounded before they run.
///
/// Its parse-time checks (`check_recursive_depth`, `check_max_directives`) and the
/// inline-mode validation visitors follow every spread of every operation on every
/// path, with no memory of fragments seen; `OverlappingFieldsCanBeMerged` flattens
/// every selection set of the text through its spreads. So each selection set of the
/// document is charged its size with fragments inlined (computed once per fragment and
/// remembered), and the sum, an upper bound of all that work, must stay under
/// [`MAX_EXPANSION`]. Replacing those checks was the alternative; they cannot be turned
/// off in async-graphql 7, so they are fed only documents this bound admits.
struct Expansion<'a> {
    document: &'a ExecutableDocument,
    /// Each fragment's size with its spreads inlined, once walked.
    sizes: HashMap<&'a str, u64>,
    /// Fragments being walked (a cycle is refused).
    walking: HashSet<&'a str>,
    /// The sum so far over every selection set walked.
    work: u64,
    /// Selections visited.
    visits: usize,
}

impl<'a> Expansion<'a> {
    /// Walks every operation, then every fragment no operation reached (validation
    /// visits those too).
    fn document(&mut self) -> Result<(), LimitError> {
        for (_, operation) in self.document.operations.iter() {
            self.set(&operation.node.selection_set.node, 0)?;
        }
        for name in self.document.fragments.keys() {
            self.fragment(name.as_str(), 0)?;
        }
        Ok(())
    }

    /// The size of `set` with fragments inlined, `level` selection sets down (counted
    /// as async-graphql counts its recursion: fields with children, fragments, spreads).
    fn set(&mut self, set: &'a SelectionSet, level: usize) -> Result<u64, LimitError> {
        if level > MAX_LEVELS {
            return Err(LimitError::TooDeeplyNested(MAX_LEVELS));
        }
        let mut size = 0u64;
        for selection in &set.items {
            self.visits += 1;
            // Arguments and directives are walked again wherever a fragment is inlined
            // (the inline-mode visitors visit every value): they count as selections.
            let values = self.values(&selection.node);
            let inner = match &selection.node {
                Selection::Field(field) if field.node.selection_set.node.items.is_empty() => 0,
                Selection::Field(field) => self.set(&field.node.selection_set.node, level + 1)?,
                Selection::InlineFragment(fragment) => self.set(&fragment.node.selection_set.node, level + 1)?,
                Selection::FragmentSpread(spread) => {
                    self.fragment(spread.node.fragment_name.node.as_str(), level + 1)?
                }
            };
            size = size.saturating_add(1).saturating_add(values).saturating_add(inner);
        }
        self.work = self.work.saturating_add(size);
        if self.work > MAX_EXPANSION {
            return Err(LimitError::TooManySelections(MAX_EXPANSION));
        }
        Ok(size)
    }

    /// The value nodes of a selection's arguments and directives (a list of a thousand
    /// items is a thousand and one).
    fn values(&mut self, selection: &Selection) -> u64 {
        fn nodes(value: &Value) -> u64 {
            match value {
                Value::List(items) => items.iter().map(nodes).fold(1, u64::saturating_add),
                Value::Object(fields) => fields.values().map(nodes).fold(1, u64::saturating_add),
                _ => 1,
            }
        }
        let arguments: u64 = match selection {
            Selection::Field(field) => field.node.arguments.iter().map(|(_, value)| nodes(&value.node)).sum(),
            _ => 0,
        };
        let directives: u64 = selection
            .directives()
            .iter()
            .map(|directive| {
                directive.node.arguments.iter().map(|(_, value)| nodes(&value.node)).fold(1, u64::saturating_add)
            })
            .sum();
        let total = arguments.saturating_add(directives);
        self.visits = self.visits.saturating_add(usize::try_from(total).unwrap_or(usize::MAX));
        total
    }

    fn fragment(&mut self, name: &'a str, level: usize) -> Result<u64, LimitError> {
        if let Some(&size) = self.sizes.get(name) {
            return Ok(size);
        }
        let fragment = self.document.fragments.get(name).ok_or_else(|| LimitError::BadFragment(name.to_owned()))?;
        if !self.walking.insert(name) {
            return Err(LimitError::BadFragment(name.to_owned()));
        }
        let size = self.set(&fragment.node.selection_set.node, level);
        self.walking.remove(name);
        let size = size?;
        self.sizes.insert(name, size);
        Ok(size)
    }
}

/// Where a selection set sits: what its fields cost depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Place {
    /// The operation's own selection set.
    Root,
    /// Under an ordinary field.
    Data,
    /// Directly under a connection field: rows are charged per row of its page.
    Connection,
    /// Under an introspection root, this many fields below the operation.
    Introspection(usize),
}

/// A selection set's measure.
#[derive(Clone, Copy, Default)]
struct Measured {
    /// Deepest ordinary nesting.
    depth: usize,
    /// Cost (under a connection: what is not per row).
    cost: u64,
    /// Under a connection: the cost of one row (`edges`, `nodes`), times the page later.
    per_row: u64,
    /// `__schema` / `__type` roots.
    introspection_roots: usize,
}

impl Measured {
    fn add(&mut self, other: Measured) {
        self.depth = self.depth.max(other.depth);
        self.cost = self.cost.saturating_add(other.cost);
        self.per_row = self.per_row.saturating_add(other.per_row);
        self.introspection_roots = self.introspection_roots.saturating_add(other.introspection_roots);
    }
}

struct Walk<'a> {
    document: &'a ExecutableDocument,
    operation: &'a OperationDefinition,
    variables: &'a Variables,
    limits: &'a DocumentLimits,
    /// Selections visited (fields, inline fragments and spreads alike).
    visits: usize,
    /// Fragments being spread on the current path (a cycle is refused).
    spreading: HashSet<&'a str>,
    /// Each fragment's measure in each place it was measured in: a fragment's measure
    /// does not depend on where it is spread, only on the kind of place, so it is
    /// walked at most once per kind. (Under introspection the measure depends on the
    /// path, so it is walked each time; [`Expansion`] has bounded that already.)
    memo: HashMap<(&'a str, Place), Measured>,
}

impl<'a> Walk<'a> {
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
            self.visits += 1;
            if self.visits > MAX_EXPANSION as usize {
                return Err(LimitError::TooManySelections(MAX_EXPANSION));
            }
            let measured = match &selection.node {
                Selection::Field(field) => self.field(&field.node, place, path)?,
                Selection::InlineFragment(fragment) => {
                    self.selections(&fragment.node.selection_set.node, place, path)?
                }
                Selection::FragmentSpread(spread) => self.spread(&spread.node, place, path)?,
            };
            total.add(measured);
        }
        Ok(total)
    }

    /// The measure of the fragment a spread names, remembered per place; a fragment
    /// that is not defined, or that spreads itself, is refused.
    fn spread(
        &mut self,
        spread: &'a FragmentSpread,
        place: Place,
        path: &mut Vec<&'a str>,
    ) -> Result<Measured, LimitError> {
        let name = spread.fragment_name.node.as_str();
        let remembered = !matches!(place, Place::Introspection(_));
        if remembered && let Some(measured) = self.memo.get(&(name, place)) {
            return Ok(*measured);
        }
        let fragment = self.document.fragments.get(name).ok_or_else(|| LimitError::BadFragment(name.to_owned()))?;
        if !self.spreading.insert(name) {
            return Err(LimitError::BadFragment(name.to_owned()));
        }
        let measured = self.selections(&fragment.node.selection_set.node, place, path);
        self.spreading.remove(name);
        let measured = measured?;
        if remembered {
            self.memo.insert((name, place), measured);
        }
        Ok(measured)
    }

    /// Measures one field in `place`.
    fn field(&mut self, field: &'a Field, place: Place, path: &mut Vec<&'a str>) -> Result<Measured, LimitError> {
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
            Place::Connection => match name {
                "edges" | "nodes" => {
                    let inner = self.selections(children, Place::Data, path)?;
                    Measured { depth: inner.depth + 1, per_row: inner.cost.saturating_add(1), ..Measured::default() }
                }
                "totalCount" => Measured { depth: 1, cost: TOTAL_COUNT_COST, ..Measured::default() },
                _ => self.field(field, Place::Data, path)?,
            },
            Place::Root if name == "__schema" || name == "__type" => {
                if !self.limits.introspection {
                    return Err(LimitError::IntrospectionDisabled);
                }
                self.selections(children, Place::Introspection(1), &mut Vec::new())?;
                Measured { introspection_roots: 1, ..Measured::default() }
            }
            _ if CONNECTION_FIELDS.contains(&name) => {
                let page = self.page_size(&field.arguments);
                let inner = self.selections(children, Place::Connection, path)?;
                let rows = inner.per_row.saturating_mul(page);
                Measured {
                    depth: inner.depth + 1,
                    cost: rows.saturating_add(inner.cost).saturating_add(base_cost(place)),
                    per_row: 0,
                    introspection_roots: 0,
                }
            }
            _ => {
                let inner = self.selections(children, Place::Data, path)?;
                let own = match name {
                    "creditUsage" => REPORT_COST,
                    name if LOT_READING_FIELDS.contains(&name) => LOT_READ_COST,
                    _ => base_cost(place),
                };
                Measured { depth: inner.depth + 1, cost: inner.cost.saturating_add(own), ..Measured::default() }
            }
        })
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
        let document = async_graphql::parser::parse_query(standard).expect("parses");
        let mut expansion =
            Expansion { document: &document, sizes: HashMap::new(), walking: HashSet::new(), work: 0, visits: 0 };
        expansion.document().expect("within the bound");
        assert!(expansion.work < MAX_EXPANSION / 10, "the standard query expands to {}", expansion.work);
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

    /// The documents of the round-3 review: each is refused after linear work.
    fn doubling_fragments(depth: usize, spreads: usize) -> String {
        let mut text = String::from("query A { ...f0 } query B { __typename }");
        for level in 0..depth {
            let body = format!("...f{} ", level + 1).repeat(spreads);
            text.push_str(&format!(" fragment f{level} on Query {{ {body}}}"));
        }
        text.push_str(&format!(" fragment f{depth} on Query {{ __typename }}"));
        text
    }

    /// One operation: `fan` levels of doubling spreads into a chain of `chain` spreads.
    fn fan_into_chain(fan: usize, chain: usize) -> String {
        let mut text = String::from("{ ...g0 }");
        for level in 0..fan {
            text.push_str(&format!(" fragment g{level} on Query {{ ...g{0} ...g{0} }}", level + 1));
        }
        text.push_str(&format!(" fragment g{fan} on Query {{ ...c0 }}"));
        for link in 0..chain {
            text.push_str(&format!(" fragment c{link} on Query {{ __typename ...c{} }}", link + 1));
        }
        text.push_str(&format!(" fragment c{chain} on Query {{ __typename }}"));
        text
    }

    fn measure_text(text: &str, operation_name: Option<&str>) -> (Result<Cost, LimitError>, usize) {
        let document = async_graphql::parser::parse_query(text).expect("parses");
        let mut visits = 0;
        let result = measure_counting(&document, operation_name, &Variables::default(), &LIMITS, &mut visits);
        (result, visits)
    }

    #[test]
    fn the_reviews_documents_are_refused_after_linear_work() {
        let doubling = doubling_fragments(24, 2);
        let (result, visits) = measure_text(&doubling, None);
        assert_eq!(result, Err(LimitError::NoOperation("Operation name required in request.".into())));
        assert_eq!(visits, 0, "no fragment is walked before the operation is selected");
        let (result, _) = measure_text(&doubling, Some("C"));
        assert_eq!(result, Err(LimitError::NoOperation(r#"Unknown operation named "C""#.into())));
        // Naming the small operation: the other one's fragments are still what the
        // executor's own checks would walk, so the document is refused, after a walk
        // of each fragment once.
        for name in ["A", "B"] {
            let (result, visits) = measure_text(&doubling, Some(name));
            assert_eq!(result, Err(LimitError::TooManySelections(MAX_EXPANSION)), "{name}");
            assert!(visits <= 4 * doubling.len(), "{visits} visits for {} bytes", doubling.len());
        }
        let triple = doubling_fragments(30, 3);
        let (result, visits) = measure_text(&triple, Some("B"));
        assert_eq!(result, Err(LimitError::TooManySelections(MAX_EXPANSION)));
        assert!(visits <= 4 * triple.len());
        let chain = fan_into_chain(15, 2_000);
        assert!(chain.len() > 60_000, "{}", chain.len());
        let (result, visits) = measure_text(&chain, None);
        assert!(matches!(result, Err(LimitError::TooDeeplyNested(_))), "{result:?}");
        assert!(visits <= 4 * chain.len());
        // Arguments are walked again wherever their fragment is inlined: a list of 6,000
        // items copied a thousand times over by doubling spreads is refused too.
        let kinds = vec!["PURCHASE"; 6_000].join(",");
        let mut arguments = String::from("query B { __typename } query A { ...d0 }");
        for level in 0..10 {
            arguments.push_str(&format!(" fragment d{level} on Query {{ ...d{0} ...d{0} }}", level + 1));
        }
        arguments.push_str(&format!(
            " fragment d10 on Query {{ creditTransactions(filter: {{ kinds: [{kinds}] }}) {{ totalCount }} }}"
        ));
        let (result, visits) = measure_text(&arguments, Some("B"));
        assert_eq!(result, Err(LimitError::TooManySelections(MAX_EXPANSION)));
        assert!(visits <= 4 * arguments.len(), "{visits} visits for {} bytes", arguments.len());
        let (result, visits) = measure_text("{ __typename }", Some("A"));
        assert_eq!(result, Err(LimitError::NoOperation(r#"Unknown operation named "A""#.into())));
        assert_eq!(visits, 0);
        // A shallow chain spread 2^15 times is refused by its expansion, not walked.
        let (result, visits) = measure_text(&fan_into_chain(15, 20), None);
        assert_eq!(result, Err(LimitError::TooManySelections(MAX_EXPANSION)));
        assert!(visits < 1_000, "{visits}");
    }

    #[test]
    fn a_fragment_costs_the_same_remembered_as_inlined() {
        let inlined = "{ a: organization { balance { balance nextExpiration { at } } } b: creditLots(first: 5) { edges { node { id } } totalCount } c: creditLots(first: 7) { edges { node { id } } totalCount } }";
        let spread = "{ a: organization { ...O } b: creditLots(first: 5) { ...L } c: creditLots(first: 7) { ...L } } fragment O on Organization { balance { balance nextExpiration { at } } } fragment L on CreditLotConnection { edges { node { id } } totalCount }";
        let (inlined, spread) = (cost(inlined).expect("ok"), cost(spread).expect("ok"));
        assert_eq!(inlined, spread);
        // organization 10 + balance 1 + balance 1 + nextExpiration (a page of lots) 20 + at 1;
        // each connection 10 + rows × (edges 1 + node 1 + id 1) + totalCount.
        assert_eq!(inlined.complexity, 33 + (10 + 5 * 3 + TOTAL_COUNT_COST) + (10 + 7 * 3 + TOTAL_COUNT_COST));
    }

    #[test]
    fn lot_reading_fields_cost_a_page_of_lots() {
        let one = cost("{ creditBalance { nextExpiration { at } } }").expect("ok");
        assert_eq!(one.complexity, 10 + LOT_READ_COST + 1);
        let aliases: String = (0..990).map(|i| format!("e{i}: nextExpiration {{ at }} ")).collect();
        assert!(matches!(cost(&format!("{{ creditBalance {{ {aliases} }} }}")), Err(LimitError::TooComplex { .. })));
        let lots =
            cost("{ creditTransactions(first: 10) { nodes { allocations { amount lot { id } } } } }").expect("ok");
        assert_eq!(lots.complexity, 10 + 10 * (1 + 1 + 1 + LOT_READ_COST + 1));
    }

    /// A random graph of fragments (each spreads later ones, any number of times) with
    /// fields, inline fragments and connections between the spreads.
    fn fragment_graph() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let item = prop_oneof![
            Just(Item::Field),
            Just(Item::Typename),
            Just(Item::Nested),
            Just(Item::Connection),
            (0usize..40).prop_map(Item::Spread),
            (0usize..40).prop_map(Item::InlineSpread),
        ];
        let fragment = proptest::collection::vec(item, 0..8);
        (proptest::collection::vec(fragment, 1..40), proptest::bool::ANY).prop_map(|(fragments, two)| {
            let count = fragments.len();
            let mut text = String::from("query Q { organization { ...f0 } }");
            if two {
                text.push_str(" query R { organization { ...f0 } }");
            }
            for (index, items) in fragments.iter().enumerate() {
                let mut body = String::from("id ");
                for item in items {
                    // Spreads only go to later fragments: a graph without cycles.
                    let later = |target: &usize| index + 1 + target % (count - index).max(1);
                    body.push_str(&match item {
                        Item::Field => "name ".to_owned(),
                        Item::Typename => "__typename ".to_owned(),
                        Item::Nested => "balance { balance } ".to_owned(),
                        Item::Connection => "creditLots(first: 3) { nodes { id } } ".to_owned(),
                        Item::Spread(target) if later(target) < count => format!("...f{} ", later(target)),
                        Item::InlineSpread(target) if later(target) < count => {
                            format!("... on Organization {{ ...f{} }} ", later(target))
                        }
                        _ => String::new(),
                    });
                }
                text.push_str(&format!(" fragment f{index} on Organization {{ {body}}}"));
            }
            text
        })
    }

    #[derive(Clone, Debug)]
    enum Item {
        Field,
        Typename,
        Nested,
        Connection,
        Spread(usize),
        InlineSpread(usize),
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the graph, measuring visits at most a few selections per byte: each
        /// fragment is walked once for its expansion and once per kind of place.
        #[test]
        fn measuring_is_linear_in_the_document(text in fragment_graph()) {
            let (_, visits) = measure_text(&text, Some("Q"));
            proptest::prop_assert!(visits <= 4 * text.len(), "{} visits for {} bytes", visits, text.len());
        }
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
