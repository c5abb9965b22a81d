//! GraphQL's null propagation, for the field errors that ask for it.
//!
//! async-graphql 7 answers a failed field by leaving it out of its object, and never
//! nulls anything above it. The GraphQL spec ("Handling Execution Errors") has the field
//! null instead and, when the field is non-null, its nearest nullable parent: an item of
//! a list of nullable items, a nullable field, or at last `data` itself. An error made
//! with [`propagating`] gets the spec's treatment from the [`NullPropagation`]
//! extension; every other error keeps async-graphql's, because giving all of them the
//! spec's would change the answers of existing requests (one failing alias would null
//! every other root field), a contract change of its own.
//!
//! How: a field resolves after everything below it, so each field, when done, looks at
//! what its descendants left for it. A failed nullable field becomes null (its error is
//! kept here and added to the response); a non-null one leaves its null to the position
//! above it, which the field (or list) holding that position applies in turn; one that
//! reaches the root nulls `data`. Requests without such an error pay two atomic loads per
//! field.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextResolve, ResolveInfo};
use async_graphql::{PathSegment, QueryPathNode, QueryPathSegment, Response, ServerError, ServerResult, Value};

/// The extension key that marks an error for null propagation; never sent to clients.
const MARK: &str = "__credits_propagate_null";

/// `error`, marked to be answered with the spec's null propagation.
pub fn propagating(mut error: async_graphql::Error) -> async_graphql::Error {
    error.extensions.get_or_insert_with(Default::default).set(MARK, true);
    error
}

/// Schema extension applying null propagation to the errors made with [`propagating`].
pub struct NullPropagation;

impl ExtensionFactory for NullPropagation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Propagation::default())
    }
}

/// One request's propagation.
#[derive(Default)]
struct Propagation {
    /// Set while a query or mutation executes (subscription events are left alone: they
    /// have no `execute` to hand the errors kept here back to).
    executing: AtomicBool,
    /// Whether anything is pending, so that fields skip the lock when nothing is.
    pending_any: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Positions a non-null field's null has reached, each to be applied by the field
    /// or list that holds it.
    pending: Vec<Vec<PathSegment>>,
    /// Errors of fields answered null here: the executor never saw them.
    errors: Vec<ServerError>,
    /// A null reached the root.
    data_is_null: bool,
}

fn is_marked(error: &ServerError) -> bool {
    error.extensions.as_ref().is_some_and(|extensions| extensions.get(MARK).is_some())
}

fn unmarked(mut error: ServerError) -> ServerError {
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.unset(MARK);
    }
    error
}

fn path_of(node: &QueryPathNode<'_>) -> Vec<PathSegment> {
    let mut path: Vec<PathSegment> = std::iter::once(node)
        .chain(node.parents())
        .map(|node| match node.segment {
            QueryPathSegment::Name(name) => PathSegment::Field(name.to_owned()),
            QueryPathSegment::Index(index) => PathSegment::Index(index),
        })
        .collect();
    path.reverse();
    path
}

/// Whether a type (`Foo!`, `[Foo!]`, …) excludes null.
fn is_non_null(ty: &str) -> bool {
    ty.ends_with('!')
}

/// The item type of a list type, if `ty` is one.
fn item_type(ty: &str) -> Option<&str> {
    ty.trim_end_matches('!').strip_prefix('[')?.strip_suffix(']')
}

/// Nulls the item of `value` (of type `ty`) at `rest` (list indexes), or the nearest
/// list item above it that may be null. False when none may: `value` itself must be.
fn null_item(value: &mut Value, ty: &str, rest: &[PathSegment]) -> bool {
    let (Some(PathSegment::Index(index)), Some(item_ty), Value::List(items)) = (rest.first(), item_type(ty), value)
    else {
        return false;
    };
    let Some(item) = items.get_mut(*index) else { return false };
    if rest.len() > 1 && null_item(item, item_ty, &rest[1..]) {
        return true;
    }
    if is_non_null(item_ty) {
        return false;
    }
    *item = Value::Null;
    true
}

#[async_graphql::async_trait::async_trait]
impl Extension for Propagation {
    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        self.executing.store(true, Ordering::Relaxed);
        let mut response = next.run(ctx, operation_name).await;
        let mut state = crate::lock(&self.state);
        if state.data_is_null {
            response.data = Value::Null;
        }
        response.errors.append(&mut state.errors);
        response
    }

    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<Value>> {
        let (path_node, return_type) = (info.path_node, info.return_type);
        let result = next.run(ctx, info).await;
        let marked = matches!(&result, Err(error) if is_marked(error));
        if !self.executing.load(Ordering::Relaxed) {
            // A subscription's event: async-graphql's way, without the mark.
            return result.map_err(unmarked);
        }
        if !marked && !self.pending_any.load(Ordering::Relaxed) {
            return result;
        }
        let path = path_of(path_node);
        let mut state = crate::lock(&self.state);
        // What this field's descendants left for it or for the items of its lists.
        let mut reached = Vec::new();
        state.pending.retain(|position| {
            let below = position.starts_with(&path);
            if below {
                reached.push(position[path.len()..].to_vec());
            }
            !below
        });
        let (mut value, mut null) = match result {
            Ok(value) => (value, false),
            Err(error) if marked => {
                state.errors.push(ServerError { path: path.clone(), ..unmarked(error) });
                (None, true)
            }
            // Left out of its object, as async-graphql does: nothing below it matters.
            Err(error) => return Err(error),
        };
        for rest in reached {
            null |= rest.is_empty() || !value.as_mut().is_some_and(|value| null_item(value, return_type, &rest));
        }
        if !null {
            return Ok(value);
        }
        if is_non_null(return_type) {
            match path.split_last() {
                Some((_, above)) if !above.is_empty() => {
                    state.pending.push(above.to_vec());
                    self.pending_any.store(true, Ordering::Relaxed);
                }
                _ => state.data_is_null = true,
            }
        }
        Ok(Some(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(index: usize) -> PathSegment {
        PathSegment::Index(index)
    }

    #[test]
    fn a_nullable_item_is_nulled_and_a_non_null_one_leaves_it_to_the_list() {
        let list = || Value::List(vec![Value::from(1), Value::from(2)]);
        let mut value = list();
        assert!(null_item(&mut value, "[Int]!", &[index(1)]));
        assert_eq!(value, Value::List(vec![Value::from(1), Value::Null]));
        let mut value = list();
        assert!(!null_item(&mut value, "[Int!]!", &[index(1)]));
        assert_eq!(value, list());
    }

    #[test]
    fn in_nested_lists_the_nearest_nullable_item_is_nulled() {
        let inner = || Value::List(vec![Value::from(1)]);
        let mut value = Value::List(vec![inner(), inner()]);
        assert!(null_item(&mut value, "[[Int!]]!", &[index(1), index(0)]));
        assert_eq!(value, Value::List(vec![inner(), Value::Null]));
        let mut value = Value::List(vec![inner(), inner()]);
        assert!(!null_item(&mut value, "[[Int!]!]", &[index(1), index(0)]));
    }
}
