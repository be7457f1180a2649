//! Subscription table of the in-process bus: a token trie, so a publish visits only the
//! branches its subject can match (cost grows with the subject's depth and the number of
//! wildcard branches, not with the total number of subscriptions).

use std::collections::HashMap;

use crate::lane::LaneSender;
use crate::subject::PatternToken;
use crate::types::Event;

type Subscribers = HashMap<u64, LaneSender<Event>>;

#[derive(Default)]
pub(super) struct Trie {
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

    pub(super) fn insert(&mut self, pattern: &[PatternToken], id: u64, tx: LaneSender<Event>) {
        let mut node = &mut self.root;
        for token in pattern {
            match token {
                PatternToken::Literal(lit) => node = node.literal.entry(lit.clone()).or_default(),
                PatternToken::One => node = node.one.get_or_insert_with(Default::default),
                PatternToken::Tail => {
                    node.tail.insert(id, tx);
                    self.len += 1;
                    return;
                }
            }
        }
        node.exact.insert(id, tx);
        self.len += 1;
    }

    pub(super) fn remove(&mut self, pattern: &[PatternToken], id: u64) {
        if remove_in(&mut self.root, pattern, id) {
            self.len -= 1;
        }
    }

    /// Calls `f` with every subscriber whose pattern matches the subject tokens.
    pub(super) fn for_each_match(
        &self,
        subject: &[&str],
        f: &mut impl FnMut(u64, &LaneSender<Event>),
    ) {
        visit(&self.root, subject, f);
    }
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

fn visit(node: &Node, subject: &[&str], f: &mut impl FnMut(u64, &LaneSender<Event>)) {
    let Some((first, rest)) = subject.split_first() else {
        node.exact.iter().for_each(|(id, tx)| f(*id, tx));
        return;
    };
    // At least one token remains, so every `>` ending here matches.
    node.tail.iter().for_each(|(id, tx)| f(*id, tx));
    if let Some(child) = node.literal.get(*first) {
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
    use crate::subject::Pattern;

    fn matches(trie: &Trie, subject: &str) -> Vec<u64> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let mut ids = Vec::new();
        trie.for_each_match(&tokens, &mut |id, _| ids.push(id));
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
            trie.insert(p.tokens(), id as u64, tx.clone());
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
        trie.remove(parsed[0].tokens(), 999);
        assert_eq!(trie.len(), patterns.len());
        for (id, p) in parsed.iter().enumerate() {
            trie.remove(p.tokens(), id as u64);
        }
        assert_eq!(trie.len(), 0);
        assert!(trie.root.is_empty(), "empty branches are pruned");
    }
}
