//! Subscription table of the in-process bus.
//!
//! Subscriptions to one concrete subject (a Listen stream's mail subject, a presence topic:
//! nearly all of them) are filed in one flat map by that subject, at a few dozen bytes each:
//! a per-subscriber trie branch cost about a kilobyte per connected device. Patterns with a
//! wildcard go into a token trie, so a publish visits only the branches its subject can match
//! (cost grows with the subject's depth and the number of wildcard branches, not with the
//! total number of subscriptions).

use std::collections::HashMap;
use std::sync::Arc;

use crate::lane::LaneSender;
use crate::subject::{Pattern, PatternToken, Shape};
use crate::types::Event;

type Subscribers = HashMap<u64, LaneSender<Event>>;

#[derive(Default)]
pub(super) struct Trie {
    /// By subject; nearly always one subscriber each.
    subjects: HashMap<Arc<str>, Vec<(u64, LaneSender<Event>)>>,
    root: Node,
    len: usize,
}

#[derive(Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    one: Option<Box<Node>>,
    /// Subscribers whose pattern ends here.
    exact: Subscribers,
    /// Subscribers whose pattern ends here with `>`.
    tail: Subscribers,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.one.is_none()
            && self.exact.is_empty()
            && self.tail.is_empty()
    }
}

impl Trie {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn insert(&mut self, pattern: &Pattern, id: u64, tx: LaneSender<Event>) {
        self.len += 1;
        let tokens = match pattern.shape() {
            Shape::Subject(subject) => {
                self.subjects
                    .entry(subject.clone())
                    .or_insert_with(|| Vec::with_capacity(1))
                    .push((id, tx));
                return;
            }
            Shape::Wild(tokens) => tokens,
        };
        let mut node = &mut self.root;
        for token in tokens {
            match token {
                PatternToken::Literal(lit) => node = node.literal.entry(lit.clone()).or_default(),
                PatternToken::One => node = node.one.get_or_insert_with(Default::default),
                PatternToken::Tail => {
                    node.tail.insert(id, tx);
                    return;
                }
            }
        }
        node.exact.insert(id, tx);
    }

    pub(super) fn remove(&mut self, pattern: &Pattern, id: u64) {
        let found = match pattern.shape() {
            Shape::Subject(subject) => remove_subject(&mut self.subjects, subject, id),
            Shape::Wild(tokens) => remove_in(&mut self.root, tokens, id),
        };
        if found {
            self.len -= 1;
        }
    }

    /// Calls `f` with every subscriber whose pattern matches the (valid) subject.
    pub(super) fn for_each_match(
        &self,
        subject: &str,
        f: &mut impl FnMut(u64, &LaneSender<Event>),
    ) {
        if let Some(subscribers) = self.subjects.get(subject) {
            subscribers.iter().for_each(|(id, tx)| f(*id, tx));
        }
        visit(&self.root, Some(subject), f);
    }
}

fn remove_subject(
    map: &mut HashMap<Arc<str>, Vec<(u64, LaneSender<Event>)>>,
    subject: &str,
    id: u64,
) -> bool {
    let Some(subscribers) = map.get_mut(subject) else {
        return false;
    };
    let Some(i) = subscribers.iter().position(|(s, _)| *s == id) else {
        return false;
    };
    subscribers.swap_remove(i);
    if subscribers.is_empty() {
        map.remove(subject);
    }
    true
}

/// Returns whether the subscriber was found; prunes nodes left empty.
fn remove_in(node: &mut Node, pattern: &[PatternToken], id: u64) -> bool {
    let Some((first, rest)) = pattern.split_first() else {
        return node.exact.remove(&id).is_some();
    };
    match first {
        PatternToken::Tail => node.tail.remove(&id).is_some(),
        PatternToken::Literal(lit) => {
            let Some(child) = node.literal.get_mut(lit) else {
                return false;
            };
            let found = remove_in(child, rest, id);
            if child.is_empty() {
                node.literal.remove(lit);
            }
            found
        }
        PatternToken::One => {
            let Some(child) = node.one.as_deref_mut() else {
                return false;
            };
            let found = remove_in(child, rest, id);
            if child.is_empty() {
                node.one = None;
            }
            found
        }
    }
}

/// `subject`: the tokens not yet matched, `None` once all are.
fn visit(node: &Node, subject: Option<&str>, f: &mut impl FnMut(u64, &LaneSender<Event>)) {
    let Some(subject) = subject else {
        node.exact.iter().for_each(|(id, tx)| f(*id, tx));
        return;
    };
    let (first, rest) = match subject.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (subject, None),
    };
    // At least one token remains, so every `>` ending here matches.
    node.tail.iter().for_each(|(id, tx)| f(*id, tx));
    if let Some(child) = node.literal.get(first) {
        visit(child, rest, f);
    }
    if let Some(child) = node.one.as_deref() {
        visit(child, rest, f);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn matches(trie: &Trie, subject: &str) -> Vec<u64> {
        let mut ids = Vec::new();
        trie.for_each_match(subject, &mut |id, _| ids.push(id));
        ids.sort_unstable();
        ids
    }

    #[test]
    fn trie_agrees_with_pattern_matching_and_prunes_on_remove() {
        let patterns = [
            "a.b.c", "a.*.c", "a.>", ">", "*", "*.b.>", "a.b", "x.y.z", "a.*.*", "a.b.c",
        ];
        let subjects = [
            "a", "a.b", "a.b.c", "a.x.c", "a.b.c.d", "x.y.z", "b", "q.b.r",
        ];
        let (tx, _rx) = crate::lane::lane(1);
        let mut trie = Trie::default();
        let parsed: Vec<Pattern> = patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        for (id, p) in parsed.iter().enumerate() {
            trie.insert(p, id as u64, tx.clone());
        }
        assert_eq!(trie.len(), patterns.len());
        for subject in subjects {
            let expected: Vec<u64> = parsed
                .iter()
                .enumerate()
                .filter(|(_, p)| p.matches(subject))
                .map(|(id, _)| id as u64)
                .collect();
            assert_eq!(matches(&trie, subject), expected, "{subject}");
        }
        // Removing an unknown id changes nothing.
        trie.remove(&parsed[0], 999);
        assert_eq!(trie.len(), patterns.len());
        for (id, p) in parsed.iter().enumerate() {
            trie.remove(p, id as u64);
        }
        assert_eq!(trie.len(), 0);
        assert!(trie.root.is_empty(), "empty branches are pruned");
        assert!(
            trie.subjects.is_empty(),
            "subjects without subscribers are dropped"
        );
    }
}
